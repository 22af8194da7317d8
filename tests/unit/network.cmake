# network/: pure parts (names, parameters, nftables scripts, error mapping); no root needed.
if(TARGET nuvem_network)
  nuvem_add_unit(test_net SOURCES ${NUVEM_TEST_DIR}/unit/test_net.c LIBS nuvem_network
                 LABELS net)
endif()
# xapid/network.c's hooks (attach, detach, start-up reconcile) in a namespace of their own;
# built once xapid compiles network.c (after the API schema declares the network messages).
if(TARGET nuvem_xapid)
  get_target_property(_nuvem_xapid_srcs nuvem_xapid SOURCES)
  if("network.c" IN_LIST _nuvem_xapid_srcs)
    nuvem_add_unit(test_net_xapid SOURCES ${NUVEM_TEST_DIR}/unit/test_net_xapid.c
                   LIBS -Wl,--start-group nuvem_xapid nuvem_api_dispatch -Wl,--end-group
                   LABELS net)
  endif()
endif()

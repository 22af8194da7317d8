# network/ on real bridges, taps, VXLAN, tc and nftables. Each test runs its "hosts" in network
# namespaces that the program creates (anonymous, so the kernel removes them with everything in
# them when it exits, even if killed). Root only: without it, or without a kernel feature, a
# test exits 77 with the reason.
if(TARGET nuvem_network)
  add_executable(net_ns ${CMAKE_CURRENT_LIST_DIR}/net_ns.c)
  target_link_libraries(net_ns PRIVATE nuvem_network)
  foreach(t bridge_pif taps qos qos_police locking vxlan dhcp vlan bond bad_input)
    add_test(NAME net_ns_${t} COMMAND net_ns ${t})
    set_tests_properties(net_ns_${t} PROPERTIES LABELS "integration;net" SKIP_RETURN_CODE 77
                         TIMEOUT 90)
  endforeach()
endif()
# xapid's network handlers end to end, in a namespace of its own (skips until the API schema
# declares the network/PIF/VIF custom messages).
# Modes: main (networks, VIFs, PIFs, metrics, DHCP renewal, DNS), vlan, bond (skip with the
# reason where the kernel lacks 8021q/bonding, after checking the refusals for real).
if(TARGET xapid)
  add_test(NAME net_xapid
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_xapid_network.py)
  set_tests_properties(net_xapid PROPERTIES LABELS "integration;net" SKIP_RETURN_CODE 77
                       ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>;XE=$<TARGET_FILE:xe>"
                       TIMEOUT 180)
  foreach(m vlan bond)
    add_test(NAME net_xapid_${m}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_xapid_network.py ${m})
    set_tests_properties(net_xapid_${m} PROPERTIES LABELS "integration;net" SKIP_RETURN_CODE 77
                         ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>" TIMEOUT 120)
  endforeach()
endif()

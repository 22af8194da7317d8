# storage/sr unit tests (file driver on a temp directory).
if(TARGET nuvem_sr)
  nuvem_add_unit(test_sr SOURCES ${NUVEM_TEST_DIR}/unit/test_sr.c LIBS nuvem_sr)
endif()
# xapid's storage hooks and handlers called directly (first-start SR, concurrent VDI work).
if(TARGET nuvem_xapid)
  nuvem_add_unit(test_sr_xapid SOURCES ${NUVEM_TEST_DIR}/unit/test_sr_xapid.c
                 LIBS -Wl,--start-group nuvem_xapid nuvem_api_dispatch -Wl,--end-group)
endif()

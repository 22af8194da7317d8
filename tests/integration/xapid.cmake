# xapid integration tests: the real daemon on 127.0.0.1 with a temp state dir.
if(TARGET xapid)
  add_test(NAME xapid_xmlrpc
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_xapid_xmlrpc.py)
  add_test(NAME xapid_jsonrpc COMMAND bash ${NUVEM_TEST_DIR}/integration/test_xapid_jsonrpc.sh)
  set_tests_properties(xapid_xmlrpc xapid_jsonrpc PROPERTIES
    LABELS integration ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>" SKIP_RETURN_CODE 77 TIMEOUT 600)
endif()

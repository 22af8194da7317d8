# xe storage commands (sr-*, vdi-*, pbd-*): the real xe against a real xapid with a file SR.
if(TARGET xapid AND TARGET xe)
  add_test(NAME xe_storage_integration
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_xe_storage.py)
  set_tests_properties(xe_storage_integration PROPERTIES
    LABELS integration
    ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>;XE=$<TARGET_FILE:xe>"
    SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()

# xe integration tests: the real xe against a real xapid (golden output in tests/golden/xe;
# regenerate with XE_GOLDEN_REGEN=1).
if(TARGET xapid AND TARGET xe)
  add_test(NAME xe_integration
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_xe.py)
  set_tests_properties(xe_integration PROPERTIES
    LABELS integration
    ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>;XE=$<TARGET_FILE:xe>"
    SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()

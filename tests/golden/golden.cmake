# Golden request->response files for both protocols (regenerate: run_golden.py --regen).
if(TARGET xapid)
  add_test(NAME golden_rpc COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/golden/run_golden.py)
  set_tests_properties(golden_rpc PROPERTIES LABELS "integration;golden"
    ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>" SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()

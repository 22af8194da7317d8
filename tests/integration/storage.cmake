# xapid's SR, PBD and VDI messages end to end on temp directories (qemu-img/qemu-io as the
# oracle where installed).
if(TARGET xapid)
  add_test(NAME xapid_storage
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_xapid_storage.py)
  set_tests_properties(xapid_storage PROPERTIES LABELS integration SKIP_RETURN_CODE 77
                       ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>" TIMEOUT 300)
endif()

# xapid's /import_raw_vdi and /export_raw_vdi (raw and vhd) end to end; qemu-img reads the VHD
# export where installed.
if(TARGET xapid)
  add_test(NAME xapid_vdi_http
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_vdi_http.py)
  set_tests_properties(xapid_vdi_http PROPERTIES LABELS integration SKIP_RETURN_CODE 77
                       ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>" TIMEOUT 300)
endif()

# storage/vhd against qemu-img, the independent oracle (skips with 77 without qemu-utils).
if(TARGET nuvem-vhd)
  add_test(NAME vhd_qemu
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/vhd_qemu.py $<TARGET_FILE:nuvem-vhd>)
  set_tests_properties(vhd_qemu PROPERTIES LABELS "integration" SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()

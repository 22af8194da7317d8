# storage/vhd unit tests.
if(TARGET nuvem_vhd)
  nuvem_add_unit(test_vhd SOURCES ${NUVEM_TEST_DIR}/unit/test_vhd.c LIBS nuvem_vhd)
  # A writer killed at random points; bounded to ~4 s (NUVEM_VHD_CRASH_ROUNDS for more).
  nuvem_add_unit(test_vhd_crash SOURCES ${NUVEM_TEST_DIR}/unit/test_vhd_crash.c LIBS nuvem_vhd
                 LABELS crash)
  target_link_options(test_vhd_crash PRIVATE -Wl,--wrap=pwrite)
endif()

nuvem_add_unit(test_common SOURCES ${NUVEM_TEST_DIR}/unit/test_common.c LIBS nuvem_common)

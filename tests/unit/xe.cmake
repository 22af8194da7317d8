# xe (cli/): parsing, ~/.xe and XE_EXTRA_ARGS, output formatting, error texts, command table.
if(TARGET nuvem_xecli)
  nuvem_add_unit(test_xe SOURCES ${NUVEM_TEST_DIR}/unit/test_xe.c LIBS nuvem_xecli)
endif()

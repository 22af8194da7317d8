# storage/vhd fuzzing: the corpus always replays as a plain test (fuzz_replay_vhd, reusing
# replay.c); the libFuzzer binary fuzz_vhd only with NUVEM_FUZZ=ON (clang). It compiles the
# library source itself so that coverage instrumentation reaches the parser.
if(TARGET nuvem_vhd)
  add_executable(fuzz_replay_vhd ${NUVEM_TEST_DIR}/fuzz/replay.c ${NUVEM_TEST_DIR}/fuzz/fuzz_vhd.c)
  target_link_libraries(fuzz_replay_vhd PRIVATE nuvem_vhd)
  add_test(NAME fuzz_replay_vhd COMMAND fuzz_replay_vhd ${NUVEM_TEST_DIR}/fuzz/corpus/vhd)
  set_tests_properties(fuzz_replay_vhd PROPERTIES LABELS "unit;fuzz")

  if(NUVEM_FUZZ)
    add_executable(fuzz_vhd ${NUVEM_TEST_DIR}/fuzz/fuzz_vhd.c ${PROJECT_SOURCE_DIR}/storage/vhd/vhd.c)
    target_include_directories(fuzz_vhd PRIVATE ${PROJECT_SOURCE_DIR}/storage/vhd)
    target_link_libraries(fuzz_vhd PRIVATE nuvem_common PkgConfig::UUID)
    target_compile_options(fuzz_vhd PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_vhd PRIVATE -fsanitize=fuzzer)
  endif()
endif()

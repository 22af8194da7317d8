# rpc codec fuzzing: the corpora always replay as plain tests; real libFuzzer binaries
# (fuzz_xmlrpc, fuzz_jsonrpc) only with NUVEM_FUZZ=ON (clang). Run them with
# tests/fuzz/run-fuzzers.sh BUILD_DIR SECONDS.
foreach(_t xmlrpc jsonrpc)
  add_executable(fuzz_replay_${_t} ${NUVEM_TEST_DIR}/fuzz/replay.c ${NUVEM_TEST_DIR}/fuzz/fuzz_${_t}.c)
  target_link_libraries(fuzz_replay_${_t} PRIVATE nuvem_rpc)
  add_test(NAME fuzz_replay_${_t} COMMAND fuzz_replay_${_t} ${NUVEM_TEST_DIR}/fuzz/corpus/${_t})
  set_tests_properties(fuzz_replay_${_t} PROPERTIES LABELS "unit;fuzz")

  if(NUVEM_FUZZ)
    add_executable(fuzz_${_t} ${NUVEM_TEST_DIR}/fuzz/fuzz_${_t}.c)
    target_link_libraries(fuzz_${_t} PRIVATE nuvem_rpc_fuzz)
    target_compile_options(fuzz_${_t} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${_t} PRIVATE -fsanitize=fuzzer)
  endif()
endforeach()

nuvem_add_unit(test_rpc_codec SOURCES ${NUVEM_TEST_DIR}/unit/test_rpc_codec.c LIBS nuvem_rpc LABELS rpc)

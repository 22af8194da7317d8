if(TARGET nuvem_xapid)
  nuvem_add_unit(test_store SOURCES ${NUVEM_TEST_DIR}/unit/test_store.c LIBS nuvem_store)
  nuvem_add_unit(test_api_tables SOURCES ${NUVEM_TEST_DIR}/unit/test_api_tables.c LIBS nuvem_api)
  target_compile_definitions(test_api_tables PRIVATE
    MODEL_JSON="${CMAKE_SOURCE_DIR}/../shared/reference/xenapi-model.json"
    SCHEMA_HASH_FILE="${NUVEM_TEST_DIR}/unit/schema.hash")
  nuvem_add_unit(test_xapid_units SOURCES ${NUVEM_TEST_DIR}/unit/test_xapid_units.c
                 LIBS -Wl,--start-group nuvem_xapid nuvem_api_dispatch -Wl,--end-group)
endif()

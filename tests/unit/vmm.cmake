# nuvem-vmm's pure parts: config, control protocol, loaders, UART (no KVM needed).
if(TARGET nuvem_vmm_core)
  nuvem_add_unit(test_vmm SOURCES ${NUVEM_TEST_DIR}/unit/test_vmm.c LIBS nuvem_vmm_core)
  target_compile_definitions(test_vmm PRIVATE NUVEM_GUEST_ELF="${NUVEM_GUEST_ELF}")
  add_dependencies(test_vmm nuvem-miniguest)
endif()

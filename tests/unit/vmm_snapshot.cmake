# nuvem-vmm save/restore: file format helpers, virtio transport and UART state (no KVM needed).
if(TARGET nuvem_vmm_core)
  nuvem_add_unit(test_vmm_snapshot SOURCES ${NUVEM_TEST_DIR}/unit/test_vmm_snapshot.c LIBS nuvem_vmm_core)
endif()

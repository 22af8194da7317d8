# nuvem-vmm live features without KVM: the guest-agent parser, virtio-balloon, virtio-console,
# the live config keys and the hot-plug CPU tables.
if(TARGET nuvem_vmm_core)
  nuvem_add_unit(test_vmm_live SOURCES ${NUVEM_TEST_DIR}/unit/test_vmm_live.c LIBS nuvem_vmm_core)
endif()

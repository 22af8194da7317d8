# nuvem-vmm devices: virtqueues, the virtio-mmio transport, virtio-blk on a raw file, their
# ACPI description and the `disks` config (no KVM needed).
if(TARGET nuvem_vmm_core)
  nuvem_add_unit(test_vmm_virtio SOURCES ${NUVEM_TEST_DIR}/unit/test_vmm_virtio.c LIBS nuvem_vmm_core)
endif()

# The VM lifecycle end to end: the real xapid driving nuvem-vmm with the mini guest (xapid finds
# nuvem-vmm and the guest next to its own binary). Needs /dev/kvm (exits 77 without).
if(TARGET xapid AND TARGET nuvem-vmm)
  foreach(t cycle reboot crash restart memory clone)
    add_test(NAME vm_lifecycle_${t}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_vm_lifecycle.py ${t})
    set_tests_properties(vm_lifecycle_${t} PROPERTIES LABELS "integration;kvm"
      ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>" SKIP_RETURN_CODE 77 TIMEOUT 300)
  endforeach()
endif()

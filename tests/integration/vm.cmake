# The VM lifecycle end to end: the real xapid driving nuvem-vmm with the mini guest (xapid finds
# nuvem-vmm and the guest next to its own binary). Needs /dev/kvm (exits 77 without); nics also
# root (a network namespace of its own).
if(TARGET xapid AND TARGET nuvem-vmm)
  foreach(t cycle reboot crash restart restart_shutdown live hardcancel suspend disks nics jsonrpc diskfull placement memory
          clone)
    add_test(NAME vm_lifecycle_${t}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_vm_lifecycle.py ${t})
    set_tests_properties(vm_lifecycle_${t} PROPERTIES LABELS "integration;kvm"
      ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>" SKIP_RETURN_CODE 77 TIMEOUT 300)
  endforeach()
  # Debian's kernel through the "Debian Linux" template, to its banner (minutes here)
  add_test(NAME vm_lifecycle_debian
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_vm_lifecycle.py debian)
  set_tests_properties(vm_lifecycle_debian PROPERTIES LABELS "integration;kvm;slow"
    ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>;NUVEM_GUEST_IMAGE_DIR=${NUVEM_GUEST_IMAGE_DIR}"
    SKIP_RETURN_CODE 77 TIMEOUT 600)
endif()

# xe's VM commands and console against a real xapid and nuvem-vmm with the mini guest (needs
# /dev/kvm; exits 77 with a reason without it).
if(TARGET xapid AND TARGET xe AND TARGET nuvem-vmm)
  add_test(NAME xe_vm_integration
           COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/test_xe_vm.py)
  set_tests_properties(xe_vm_integration PROPERTIES
    LABELS "integration;kvm"
    ENVIRONMENT "XAPID=$<TARGET_FILE:xapid>;XE=$<TARGET_FILE:xe>"
    SKIP_RETURN_CODE 77 TIMEOUT 600)
endif()

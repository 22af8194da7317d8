# nuvem-vmm integration tests: the real VMM running the bundled mini guest (needs /dev/kvm;
# each test exits 77 with a reason without it).
if(TARGET nuvem-vmm)
  foreach(t boot poweroff powerdown reboot crash pause quit smp reset console protocol bad_config vmmctl flood bigmem)
    add_test(NAME vmm_it_${t}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/vmm_miniguest.py
                     $<TARGET_FILE:nuvem-vmm> ${NUVEM_GUEST_ELF} ${t})
    set_tests_properties(vmm_it_${t} PROPERTIES LABELS "integration;kvm" SKIP_RETURN_CODE 77
                         TIMEOUT 120)
  endforeach()
endif()

# nuvem-vmm save/restore (`save` command, --restore) with the bundled mini guest (needs
# /dev/kvm; disk_net also root for a tap in its own network namespace; else exit 77).
if(TARGET nuvem-vmm)
  foreach(t ticker busy roundtrip write_error exists bad_files start_paused size disk_net)
    add_test(NAME vmm_save_${t}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/vmm_save.py
                     $<TARGET_FILE:nuvem-vmm> ${NUVEM_GUEST_ELF} ${t})
    set_tests_properties(vmm_save_${t} PROPERTIES LABELS "integration;kvm" SKIP_RETURN_CODE 77
                         TIMEOUT 180)
  endforeach()
endif()

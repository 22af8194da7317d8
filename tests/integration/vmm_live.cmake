# nuvem-vmm live features with the mini guest: virtio-balloon, vCPU hot-plug, the guest agent on
# virtio-console (needs /dev/kvm; agent_net also root for a tap in a namespace; exit 77 without).
if(TARGET nuvem-vmm)
  foreach(t balloon balloon_errors vcpus agent agent_shutdown agent_net save_restore)
    add_test(NAME vmm_live_${t}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/vmm_live.py
                     $<TARGET_FILE:nuvem-vmm> ${NUVEM_GUEST_ELF} ${t})
    set_tests_properties(vmm_live_${t} PROPERTIES LABELS "integration;kvm" SKIP_RETURN_CODE 77
                         TIMEOUT 180)
  endforeach()
endif()

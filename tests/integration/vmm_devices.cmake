# nuvem-vmm devices (virtio-blk, virtio-net over virtio-mmio) with the bundled mini guest as the driver
# (needs /dev/kvm for the tests that boot; those exit 77 with a reason without it).
if(TARGET nuvem-vmm)
  foreach(t rw readonly reboot shrunk bad_image bad_config locked sandboxed speed resize discard
            enospc)
    add_test(NAME vmm_virtio_blk_${t}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/vmm_virtio_blk.py
                     $<TARGET_FILE:nuvem-vmm> ${NUVEM_GUEST_ELF} ${t})
    set_tests_properties(vmm_virtio_blk_${t} PROPERTIES LABELS "integration;kvm"
                         SKIP_RETURN_CODE 77 TIMEOUT 120)
  endforeach()
  # VHD disks through storage/vhd, qemu-img as the oracle (skips without it); enospc needs root.
  if(TARGET nuvem-vhd)
    foreach(t dynamic chain bad resize readonly enospc save discard)
      add_test(NAME vmm_blk_vhd_${t}
               COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/vmm_blk_vhd.py
                       $<TARGET_FILE:nuvem-vmm> ${NUVEM_GUEST_ELF} ${t})
      set_tests_properties(vmm_blk_vhd_${t} PROPERTIES LABELS "integration;kvm"
                           SKIP_RETURN_CODE 77 TIMEOUT 180
                           ENVIRONMENT "NUVEM_VHD=$<TARGET_FILE:nuvem-vhd>")
    endforeach()
  endif()
  # virtio-net on a tap, inside a network namespace of its own (root; skips otherwise).
  foreach(t rxtx tap_gone with_disk)
    add_test(NAME vmm_virtio_net_${t}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/vmm_virtio_net.py
                     $<TARGET_FILE:nuvem-vmm> ${NUVEM_GUEST_ELF} ${t})
    set_tests_properties(vmm_virtio_net_${t} PROPERTIES LABELS "integration;kvm"
                         SKIP_RETURN_CODE 77 TIMEOUT 120)
  endforeach()
endif()

# Linux guests under nuvem-vmm. The image comes from scripts/build-guest-image.sh (never in
# git); without it, or without /dev/kvm, the tests skip with a reason.
set(NUVEM_GUEST_IMAGE_DIR "${CMAKE_SOURCE_DIR}/build/guest-image" CACHE PATH
    "Linux guest image made by scripts/build-guest-image.sh")
# bench/ is added after tests/, so test for its folder, not its target.
if(TARGET nuvem-vmm AND EXISTS ${CMAKE_SOURCE_DIR}/bench/kvm-speed/CMakeLists.txt)
  foreach(t banner full)
    add_test(NAME vmm_linux_${t}
             COMMAND ${Python3_EXECUTABLE} ${NUVEM_TEST_DIR}/integration/vmm_linux.py
                     $<TARGET_FILE:nuvem-vmm> $<TARGET_FILE:kvm-speed> ${NUVEM_GUEST_IMAGE_DIR} ${t})
    set_tests_properties(vmm_linux_${t} PROPERTIES LABELS "integration;kvm;slow"
                         SKIP_RETURN_CODE 77 TIMEOUT 600)
  endforeach()
endif()

# The speed probe that gates the full boot: keep it working (skips without /dev/kvm).
if(EXISTS ${CMAKE_SOURCE_DIR}/bench/kvm-speed/CMakeLists.txt)
  add_test(NAME vmm_kvm_speed COMMAND $<TARGET_FILE:kvm-speed> --quick)
  set_tests_properties(vmm_kvm_speed PROPERTIES LABELS "integration;kvm" SKIP_RETURN_CODE 77
                       TIMEOUT 120 PASS_REGULAR_EXPRESSION "hardware speed: (yes|no)")
endif()

# nuvem-vmm's seccomp sandbox (hypervisor/sandbox.c, libseccomp): forked children confined.
if(TARGET nuvem-vmm AND TARGET PkgConfig::SECCOMP)
  nuvem_add_unit(test_vmm_sandbox
                 SOURCES ${NUVEM_TEST_DIR}/unit/test_vmm_sandbox.c ${CMAKE_SOURCE_DIR}/hypervisor/sandbox.c
                 LIBS nuvem_common PkgConfig::SECCOMP Threads::Threads)
  target_include_directories(test_vmm_sandbox PRIVATE ${CMAKE_SOURCE_DIR}/hypervisor)
endif()

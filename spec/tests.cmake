# The test suite: C unit tests of the core, then every busted spec file run
# under the lugo host. ctest's summary is the last line of the test command.
file(GLOB LUGO_C_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/c/test_*.c)
foreach(src IN LISTS LUGO_C_TESTS)
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE lugo_rt PkgConfig::LUAJIT)
  add_test(NAME c/${name} COMMAND ${name})
endforeach()

find_program(BUSTED busted REQUIRED)
if(LUGO_SANITIZE)
  set(LUGO_SANITIZED 1)
else()
  set(LUGO_SANITIZED 0)
endif()
# ThreadSanitizer holds a signal back until the thread enters an
# intercepted call, which a loop running in LuaJIT's VM never does.
if(LUGO_SANITIZE STREQUAL "thread")
  set(LUGO_TSAN 1)
else()
  set(LUGO_TSAN 0)
endif()
# Every spec runs with 1, 2 and 4 processors (LUGO_MAXPROCS).
set(LUGO_SPEC_PROCS 1 2 4 CACHE STRING "processor counts the specs run with")
file(GLOB LUGO_SPECS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/*_spec.lua)
foreach(spec IN LISTS LUGO_SPECS)
  get_filename_component(name ${spec} NAME_WE)
  foreach(procs IN LISTS LUGO_SPEC_PROCS)
    add_test(NAME spec/${name}/p${procs}
             COMMAND ${BUSTED} --lua=$<TARGET_FILE:lugo> -o utfTerminal ${spec}
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(spec/${name}/p${procs} PROPERTIES
      ENVIRONMENT "LUGO_MAXPROCS=${procs};LUGO_BIN=$<TARGET_FILE:lugo>;LUGO_CORE_DIR=${CMAKE_BINARY_DIR}/lib;LUGO_SANITIZED=${LUGO_SANITIZED};LUGO_TSAN=${LUGO_TSAN};LUA_PATH=${CMAKE_SOURCE_DIR}/spec/?.lua\;\;"
      TIMEOUT 300)
  endforeach()
endforeach()

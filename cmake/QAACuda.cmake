# CUDA engines of qaa. Included from the top-level CMakeLists.txt after the CPU library.
#
# Two engines: the fused engine (cpp/src/cuda/fused/: one kernel per call, states kept on chip; needs only
# nvcc and the CUDA runtime) and the cuStateVec per-gate engine (general circuits, n > 13). The Python module
# qaa._engine_cuda holds the fused engine, with the cuStateVec engine behind it when that is built too.
#
# QAA_CUDA (cache, AUTO | ON | OFF):
#   AUTO  build the CUDA engines when nvcc is found, otherwise print why not and go on;
#   ON    build them, or stop configuring with a message that says what is missing;
#   OFF   never build them.
# QAA_CUSTATEVEC (cache, AUTO | ON | OFF): the cuStateVec engine, on top of the fused one. AUTO: when
#   cuStateVec is found (otherwise a status line says why it was skipped); ON: required; OFF: never.
# QAA_CUDA_ARCHITECTURES (cache, default "90"): CUDA_ARCHITECTURES of the backend. "90" is sm_90 machine code
#   (Hopper: H100, H200) plus compute_90 PTX that the driver JIT-compiles for newer GPUs.
# CUSTATEVEC_ROOT (cache or environment): a folder holding include/custatevec.h and lib/libcustatevec.so[.1].
#   Without it, cuStateVec is looked for in the Python environment (the `custatevec-cu13` wheel puts it in
#   site-packages/cuquantum/{include,lib}), then in the usual system places.
#
# Targets:
#   qaa_engine_fused  static library, make_fused_cuda_backend<T>() (cpp/src/cuda/fused/engine_fused.hpp);
#                     needs qaa_circuit and the CUDA runtime only
#   qaa_engine_cuda   static library, make_cuda_backend<T>() (cpp/src/cuda/engine_cuda.hpp), with cuStateVec;
#                     needs qaa_circuit only
#   _engine_cuda      nanobind module (QAA_BUILD_PYTHON), installed to qaa/ with an RPATH that finds the wheel's
#                     libcustatevec.so.1 at $ORIGIN/../cuquantum/lib; it does not link libtorch
#   qaa_tests_cuda    GoogleTest executable (QAA_BUILD_TESTS), registered with CTest; every check reports
#                     SKIPPED on a machine without a CUDA device
#
# The module and test targets need nanobind and GoogleTest, which the top-level file sets up after including
# this one, so they are created by a deferred call at the end of the top-level directory.

set(QAA_CUDA_ARCHITECTURES "90" CACHE STRING "CUDA architectures of the qaa CUDA backend (e.g. 90, or 90;100)")
set(QAA_CUSTATEVEC "AUTO" CACHE STRING "Build the cuStateVec engine too: AUTO, ON or OFF")
set_property(CACHE QAA_CUSTATEVEC PROPERTY STRINGS AUTO ON OFF)
set(CUSTATEVEC_ROOT "" CACHE PATH "Folder with include/custatevec.h and lib/libcustatevec.so (optional)")

string(TOUPPER "${QAA_CUDA}" _qaa_cuda_mode)
if(_qaa_cuda_mode MATCHES "^(ON|YES|TRUE|Y|1)$")
  set(_qaa_cuda_mode ON)
elseif(_qaa_cuda_mode MATCHES "^(OFF|NO|FALSE|N|0)$")
  set(_qaa_cuda_mode OFF)
elseif(NOT _qaa_cuda_mode STREQUAL "AUTO")
  message(FATAL_ERROR "QAA_CUDA must be AUTO, ON or OFF, got '${QAA_CUDA}'")
endif()

set(QAA_CUDA_ENABLED OFF)
set(QAA_CUDA_FUSED_ENABLED OFF)
if(_qaa_cuda_mode STREQUAL "OFF")
  message(STATUS "qaa: CUDA engines not built (QAA_CUDA=OFF)")
  return()
endif()

# Stop here: a configuration error with QAA_CUDA=ON, a status line with AUTO. (A macro, so return() leaves
# this file.)
macro(_qaa_cuda_unavailable reason)
  if(_qaa_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "qaa: QAA_CUDA=ON but ${reason}")
  endif()
  message(STATUS "qaa: CUDA engines not built: ${reason} (QAA_CUDA=AUTO)")
  return()
endmacro()

# ---- nvcc ----
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  _qaa_cuda_unavailable("no working CUDA compiler (nvcc) was found; put nvcc on PATH or set CMAKE_CUDA_COMPILER")
endif()
enable_language(CUDA)
find_package(CUDAToolkit)
if(NOT CUDAToolkit_FOUND)
  _qaa_cuda_unavailable("the CUDA toolkit (runtime library and headers) was not found next to ${CMAKE_CUDA_COMPILER}")
endif()

# ---- the fused engine (CUDA runtime only) ----
add_library(qaa_engine_fused STATIC cpp/src/cuda/fused/engine_fused.cu cpp/src/cuda/fused/engine_fused_f32.cu)
target_include_directories(qaa_engine_fused PUBLIC cpp/include cpp/src/cuda cpp/src/cuda/fused)
target_link_libraries(qaa_engine_fused PUBLIC qaa_circuit CUDA::cudart_static)
set_target_properties(qaa_engine_fused PROPERTIES
  CUDA_ARCHITECTURES "${QAA_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_RUNTIME_LIBRARY Static
  POSITION_INDEPENDENT_CODE ON)
set_property(TARGET qaa_engine_fused PROPERTY COMPILE_OPTIONS "")
target_compile_options(qaa_engine_fused PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra --Werror=cross-execution-space-call>)
set(QAA_CUDA_FUSED_ENABLED ON)
message(STATUS "qaa: fused CUDA engine enabled: nvcc ${CMAKE_CUDA_COMPILER_VERSION} (${CMAKE_CUDA_COMPILER}), "
               "architectures ${QAA_CUDA_ARCHITECTURES}")

# ---- cuStateVec (optional on top of the fused engine) ----
string(TOUPPER "${QAA_CUSTATEVEC}" _qaa_cusv_mode)
if(_qaa_cusv_mode MATCHES "^(ON|YES|TRUE|Y|1)$")
  set(_qaa_cusv_mode ON)
elseif(_qaa_cusv_mode MATCHES "^(OFF|NO|FALSE|N|0)$")
  set(_qaa_cusv_mode OFF)
elseif(NOT _qaa_cusv_mode STREQUAL "AUTO")
  message(FATAL_ERROR "QAA_CUSTATEVEC must be AUTO, ON or OFF, got '${QAA_CUSTATEVEC}'")
endif()
set(_qaa_cusv_skip "")
if(_qaa_cusv_mode STREQUAL "OFF")
  set(_qaa_cusv_skip "QAA_CUSTATEVEC=OFF")
endif()
set(_qaa_cusv_roots)
foreach(_root IN ITEMS "${CUSTATEVEC_ROOT}" "$ENV{CUSTATEVEC_ROOT}" "$ENV{CUQUANTUM_ROOT}")
  if(_root)
    list(APPEND _qaa_cusv_roots "${_root}")
  endif()
endforeach()
# The Python environment's site-packages folders (the custatevec-cu13 wheel installs cuquantum/ there).
set(_qaa_py "${Python_EXECUTABLE}")
if(NOT _qaa_py)
  set(_qaa_py "${Python3_EXECUTABLE}")
endif()
if(NOT _qaa_py)
  find_program(_qaa_py_found NAMES python3 python)
  set(_qaa_py "${_qaa_py_found}")
endif()
if(_qaa_py)
  execute_process(
    COMMAND "${_qaa_py}" -c
      "import site, sys, sysconfig\nps = [sysconfig.get_paths()[k] for k in ('purelib', 'platlib')]\ntry:\n    ps += site.getsitepackages() + [site.getusersitepackages()]\nexcept Exception:\n    pass\nps += sys.path\nprint(';'.join(p for p in dict.fromkeys(ps) if p))"
    OUTPUT_VARIABLE _qaa_site_dirs OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _qaa_py_rc)
  if(_qaa_py_rc EQUAL 0)
    foreach(_dir IN LISTS _qaa_site_dirs)
      if(EXISTS "${_dir}/cuquantum")
        list(APPEND _qaa_cusv_roots "${_dir}/cuquantum")
      endif()
    endforeach()
  endif()
endif()
# Search again when the candidate folders change (another Python environment or CUSTATEVEC_ROOT).
if(NOT "${_qaa_cusv_roots}" STREQUAL "${_QAA_CUSV_ROOTS_SEARCHED}")
  unset(CUSTATEVEC_INCLUDE_DIR CACHE)
  unset(CUSTATEVEC_LIBRARY CACHE)
  set(_QAA_CUSV_ROOTS_SEARCHED "${_qaa_cusv_roots}" CACHE INTERNAL "cuStateVec folders last searched")
endif()
find_path(CUSTATEVEC_INCLUDE_DIR custatevec.h HINTS ${_qaa_cusv_roots} PATH_SUFFIXES include
          DOC "Folder of custatevec.h")
find_library(CUSTATEVEC_LIBRARY NAMES custatevec libcustatevec.so.1 HINTS ${_qaa_cusv_roots}
             PATH_SUFFIXES lib lib64 DOC "libcustatevec shared library")
if(NOT _qaa_cusv_skip AND (NOT CUSTATEVEC_INCLUDE_DIR OR NOT CUSTATEVEC_LIBRARY))
  if(_qaa_cusv_roots)
    string(REPLACE ";" ", " _qaa_where "${_qaa_cusv_roots}")
  else()
    set(_qaa_where "no CUSTATEVEC_ROOT and no cuquantum/ folder in the site-packages of Python '${_qaa_py}'")
  endif()
  set(_qaa_cusv_skip "cuStateVec (custatevec.h, libcustatevec.so) was not found (searched: ${_qaa_where}; \
then the system paths). Install it with `pip install custatevec-cu13` into the Python environment used for the \
build, or set CUSTATEVEC_ROOT")
  if(_qaa_cusv_mode STREQUAL "ON")
    message(FATAL_ERROR "qaa: QAA_CUSTATEVEC=ON but ${_qaa_cusv_skip}")
  endif()
endif()
set(QAA_CUSTATEVEC_VERSION "")
if(_qaa_cusv_skip)
  message(STATUS "qaa: cuStateVec engine not built: ${_qaa_cusv_skip}; the fused engine serves circuits of up to "
                 "13 qubits, larger ones raise")
else()
get_filename_component(QAA_CUSTATEVEC_LIBDIR "${CUSTATEVEC_LIBRARY}" DIRECTORY)
file(STRINGS "${CUSTATEVEC_INCLUDE_DIR}/custatevec.h" _qaa_cusv_ver REGEX "#define CUSTATEVEC_VER_(MAJOR|MINOR|PATCH) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" _qaa_cusv_ver "${_qaa_cusv_ver}")

if(NOT TARGET qaa::custatevec)
  add_library(qaa::custatevec SHARED IMPORTED)
  set_target_properties(qaa::custatevec PROPERTIES
    IMPORTED_LOCATION "${CUSTATEVEC_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CUSTATEVEC_INCLUDE_DIR}")
endif()

# ---- the backend library ----
add_library(qaa_engine_cuda STATIC cpp/src/cuda/engine_cuda.cu)
target_include_directories(qaa_engine_cuda PUBLIC cpp/include cpp/src/cuda)
# qaa_circuit provides the circuit IR (the CPU backend is not a dependency); the CUDA runtime is linked
# statically (cuStateVec carries its own), so the module needs no libcudart at run time.
target_link_libraries(qaa_engine_cuda PUBLIC qaa_circuit qaa::custatevec CUDA::cudart_static)
set_target_properties(qaa_engine_cuda PROPERTIES
  CUDA_ARCHITECTURES "${QAA_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_RUNTIME_LIBRARY Static
  POSITION_INDEPENDENT_CODE ON)
# Directory-wide options from the top-level file (QAA_SANITIZE's -fsanitize=...) are host-compiler flags that
# nvcc rejects: this target does not inherit them (its objects are then built without sanitizers).
set_property(TARGET qaa_engine_cuda PROPERTY COMPILE_OPTIONS "")
target_compile_options(qaa_engine_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra --Werror=cross-execution-space-call>)

set(QAA_CUDA_ENABLED ON)
set(QAA_CUSTATEVEC_VERSION "${_qaa_cusv_ver}")
message(STATUS "qaa: cuStateVec engine enabled: nvcc ${CMAKE_CUDA_COMPILER_VERSION} (${CMAKE_CUDA_COMPILER}), "
               "architectures ${QAA_CUDA_ARCHITECTURES}, cuStateVec ${_qaa_cusv_ver} (${CUSTATEVEC_LIBRARY})")
endif()

# ---- targets that need nanobind / GoogleTest: created after the rest of the top-level file ----
function(_qaa_cuda_deferred_targets)
  if(QAA_BUILD_PYTHON)
    if(NOT COMMAND nanobind_add_module)
      message(FATAL_ERROR "qaa: QAA_BUILD_PYTHON is ON but nanobind was not set up by the top-level CMakeLists.txt")
    endif()
    nanobind_add_module(_engine_cuda NB_STATIC bindings/engine_cuda.cpp)
    target_link_libraries(_engine_cuda PRIVATE qaa_engine_fused)
    target_compile_definitions(_engine_cuda PRIVATE
      QAA_CUDA_ARCHS="${QAA_CUDA_ARCHITECTURES}" QAA_NVCC_VERSION="${CMAKE_CUDA_COMPILER_VERSION}")
    if(QAA_CUDA_ENABLED)
      target_link_libraries(_engine_cuda PRIVATE qaa_engine_cuda)
      target_compile_definitions(_engine_cuda PRIVATE QAA_WITH_CUSTATEVEC=1
                                 QAA_CUSTATEVEC_VERSION_STR="${QAA_CUSTATEVEC_VERSION}")
      # Build tree: CMake's RPATH to the found library folder; installed wheel: site-packages/qaa/ ->
      # site-packages/cuquantum/lib (the custatevec-cu13 wheel's layout).
      set_target_properties(_engine_cuda PROPERTIES INSTALL_RPATH "$ORIGIN/../cuquantum/lib")
    endif()
    install(TARGETS _engine_cuda LIBRARY DESTINATION qaa)
  endif()
  if(QAA_BUILD_TESTS)
    include(GoogleTest)
    add_executable(qaa_tests_fused_cuda cpp/tests/backend_fused_cuda_test.cpp)
    # the CPU backend is the reference of the parity checks
    target_link_libraries(qaa_tests_fused_cuda PRIVATE qaa_engine_fused qaa_engine_cpu GTest::gtest_main)
    target_include_directories(qaa_tests_fused_cuda PRIVATE cpp/tests)
    if(QAA_CUDA_ENABLED)
      target_link_libraries(qaa_tests_fused_cuda PRIVATE qaa_engine_cuda)
      target_compile_definitions(qaa_tests_fused_cuda PRIVATE QAA_WITH_CUSTATEVEC=1)
      set_target_properties(qaa_tests_fused_cuda PROPERTIES BUILD_RPATH "${QAA_CUSTATEVEC_LIBDIR}")
    endif()
    gtest_discover_tests(qaa_tests_fused_cuda DISCOVERY_TIMEOUT 60 TEST_PREFIX "fused_cuda." PROPERTIES LABELS cuda)
    if(QAA_CUDA_ENABLED)
      add_executable(qaa_tests_cuda cpp/tests/backend_cuda_test.cpp)
      # the CPU backend is the reference of the parity checks
      target_link_libraries(qaa_tests_cuda PRIVATE qaa_engine_cuda qaa_engine_cpu GTest::gtest_main)
      set_target_properties(qaa_tests_cuda PROPERTIES BUILD_RPATH "${QAA_CUSTATEVEC_LIBDIR}")
      # Discovery runs the binary (it starts without a GPU); every check then skips itself without a device.
      gtest_discover_tests(qaa_tests_cuda DISCOVERY_TIMEOUT 60 TEST_PREFIX "custatevec." PROPERTIES LABELS cuda)
    endif()
  endif()
endfunction()
cmake_language(DEFER CALL _qaa_cuda_deferred_targets)

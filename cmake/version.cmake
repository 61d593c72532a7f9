# Build identity for modelsmith_build_info and the manifest: the project version plus the git
# revision when the source is a git checkout.
execute_process(COMMAND git rev-parse --short=12 HEAD
                WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                OUTPUT_VARIABLE MODELSMITH_GIT_REVISION
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT MODELSMITH_GIT_REVISION)
  set(MODELSMITH_GIT_REVISION "unknown")
endif()
set(MODELSMITH_VERSION ${PROJECT_VERSION})

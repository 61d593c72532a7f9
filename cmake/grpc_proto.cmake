# add_grpc_proto_library(<target> ROOT <dir> PROTOS <relative paths>... [GRPC <relative paths>...])
# Generates C++ messages for PROTOS and additionally gRPC stubs for GRPC (a subset of PROTOS),
# then builds them into a static library that links protobuf and gRPC.
function(add_grpc_proto_library target)
  cmake_parse_arguments(ARG "" "ROOT" "PROTOS;GRPC" ${ARGN})
  set(gen_dir ${CMAKE_CURRENT_BINARY_DIR}/gen)
  file(MAKE_DIRECTORY ${gen_dir})
  set(sources)
  foreach(rel IN LISTS ARG_PROTOS)
    get_filename_component(stem ${rel} NAME_WE)
    get_filename_component(dir ${rel} DIRECTORY)
    set(out_base ${gen_dir}/${dir}/${stem})
    set(outputs ${out_base}.pb.cc ${out_base}.pb.h)
    set(grpc_args)
    if(rel IN_LIST ARG_GRPC)
      list(APPEND outputs ${out_base}.grpc.pb.cc ${out_base}.grpc.pb.h)
      set(grpc_args --grpc_out=${gen_dir}
          --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>)
    endif()
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND $<TARGET_FILE:protobuf::protoc> --proto_path=${ARG_ROOT}
              --proto_path=${Protobuf_INCLUDE_DIR} --cpp_out=${gen_dir} ${grpc_args}
              ${ARG_ROOT}/${rel}
      DEPENDS ${ARG_ROOT}/${rel} protobuf::protoc gRPC::grpc_cpp_plugin
      COMMENT "protoc ${rel}")
    list(APPEND sources ${outputs})
  endforeach()
  add_library(${target} STATIC ${sources})
  target_include_directories(${target} PUBLIC ${gen_dir})
  target_link_libraries(${target} PUBLIC gRPC::grpc++ protobuf::libprotobuf)
  target_compile_options(${target} PRIVATE -w)
endfunction()

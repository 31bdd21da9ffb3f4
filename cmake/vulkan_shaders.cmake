# Compiles every GLSL compute shader in src/kernels/vulkan/shaders/ (*.comp; *.glsl are their includes) to
# SPIR-V with glslc at build time and embeds the modules into the library target `target`
# (kernels/vulkan/embedded_shaders.h looks them up by name). glslc writes a depfile, so editing an include
# rebuilds the shaders that use it.
function(kvtier_embed_vulkan_shaders target)
  set(shader_dir ${CMAKE_SOURCE_DIR}/src/kernels/vulkan/shaders)
  set(out_dir ${CMAKE_BINARY_DIR}/vulkan_shaders)
  file(MAKE_DIRECTORY ${out_dir})
  file(GLOB shaders CONFIGURE_DEPENDS ${shader_dir}/*.comp)
  set(spv_files)
  foreach(src ${shaders})
    get_filename_component(name ${src} NAME_WE)
    set(spv ${out_dir}/${name}.spv)
    add_custom_command(
      OUTPUT ${spv}
      COMMAND ${KVTIER_GLSLC} --target-env=vulkan1.2 -O -Werror -I ${shader_dir}
              -MD -MF ${spv}.d -o ${spv} ${src}
      DEPENDS ${src}
      DEPFILE ${spv}.d
      COMMENT "glslc ${name}.comp"
      VERBATIM)
    list(APPEND spv_files ${spv})
  endforeach()
  set(generated ${out_dir}/embedded_shaders.cpp)
  add_custom_command(
    OUTPUT ${generated}
    COMMAND ${CMAKE_COMMAND} "-DSPV_FILES=${spv_files}" -DOUTPUT=${generated}
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_spirv.cmake
    DEPENDS ${spv_files} ${CMAKE_SOURCE_DIR}/cmake/embed_spirv.cmake
    COMMENT "embedding ${target}'s SPIR-V"
    VERBATIM)
  target_sources(${target} PRIVATE ${generated})
endfunction()

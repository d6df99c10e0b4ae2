// Host <-> device copies on the library stream (synchronous from the host's view).
#pragma once
#include <cstddef>

namespace cnnfast::cuda {
void copy_to_device(void* dst, const void* src, std::size_t bytes);
void copy_to_host(void* dst, const void* src, std::size_t bytes);
void copy_device_to_device(void* dst, const void* src, std::size_t bytes);
void memset_device(void* dst, int value, std::size_t bytes);  // async on the library stream
void synchronize();                       // waits for the library stream
void wait_for_foreign_stream(long long handle);  // a stream named by __cuda_array_interface__ or DLPack
void* stream_handle();
}  // namespace cnnfast::cuda

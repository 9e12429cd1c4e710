// Whole-file writes that never leave a half-written file behind: the data goes to a temporary
// file in the same directory, is fsynced, then renamed over the target (rename is atomic).
#pragma once
#include <filesystem>
#include <functional>
#include <string_view>

namespace tandem {

// Writes `data` to `path` atomically; throws Error naming the path on any failure.
void write_file_atomic(const std::filesystem::path& path, std::string_view data);
// The same, streamed: `produce` calls `write` once per piece (large files never sit whole in memory).
using ChunkWriter = std::function<void(std::string_view)>;
void write_file_atomic(const std::filesystem::path& path, const std::function<void(const ChunkWriter& write)>& produce);

}  // namespace tandem

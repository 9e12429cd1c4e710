// A JSON value read as a C++ type, strictly, for every parser of outside JSON (HF config.json, the
// trainer config): integer types take only JSON integers (nlohmann would convert 1e300 to int64:
// undefined behaviour), and any mismatch is an Error naming where, the kind of key and the key:
//   "<where>: <kind> '<key>' has the wrong type: <value>".
#pragma once
#include <exception>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace tandem {

template <typename T>
T json_value(const nlohmann::json& v, const std::string& where, const char* kind, const char* key) {
  if (!std::is_integral_v<T> || std::is_same_v<T, bool> || v.is_number_integer()) {
    try {
      return v.get<T>();
    } catch (const std::exception&) {
    }
  }
  throw Error(where + ": " + kind + " '" + key + "' has the wrong type: " + v.dump());
}

}  // namespace tandem

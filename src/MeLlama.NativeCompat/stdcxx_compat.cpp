// Supplies the one libstdc++ symbol from GLIBCXX_3.4.32 (GCC 13) that TorchSharp's native shim needs,
// for hosts whose libstdc++ is older (Debian 12, Ubuntu 22.04, RHEL 8/9).
// GCC 13 headers call std::ios_base_library_init() instead of placing a static ios_base::Init in every
// translation unit that includes <iostream>; constructing one Init object here has the same effect
// (the standard streams are initialised before first use; Init is reference counted).
#include <ios>

namespace std {
void ios_base_library_init();
void ios_base_library_init() {
    static ios_base::Init init;
}
}  // namespace std

// The build itself: a QAA_SANITIZE build really is instrumented.
#include <gtest/gtest.h>

namespace qaa::test {

TEST(Build, SanitizerInstrumentationWhenRequested) {
#if defined(QAA_SANITIZE_BUILD)
#if defined(__SANITIZE_ADDRESS__)
  SUCCEED();
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  SUCCEED();
#else
  FAIL() << "QAA_SANITIZE=ON but the tests are not built with AddressSanitizer";
#endif
#else
  FAIL() << "QAA_SANITIZE=ON but the tests are not built with AddressSanitizer";
#endif
#else
  GTEST_SKIP() << "not a QAA_SANITIZE build";
#endif
}

}  // namespace qaa::test

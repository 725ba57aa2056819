"""One fuzz target: a libFuzzer binary and a gcc-built replay test."""

def overlord_fuzz_target(name, deps, size = "small"):
    """Declares the targets of tests/fuzz/NAME_fuzz.cpp.

    NAME_fuzz: the libFuzzer binary. It links only under --config=fuzz
    (clang), so it is tagged manual and `bazel test //...` skips it.
    NAME_fuzz_replay_test: feeds every file in regressions/NAME/ and
    seeds/NAME/ to the same entry point, built with the default toolchain.
    """
    native.cc_library(
        name = name + "_fuzz_entry",
        testonly = True,
        srcs = [name + "_fuzz.cpp"],
        deps = deps + [":fuzz_support"],
        alwayslink = True,
    )

    native.cc_binary(
        name = name + "_fuzz",
        testonly = True,
        linkopts = ["-fsanitize=fuzzer"],
        tags = ["manual"],
        deps = [":" + name + "_fuzz_entry"],
    )

    native.cc_test(
        name = name + "_fuzz_replay_test",
        size = size,
        srcs = ["replay_main.cpp"],
        args = [
            "tests/fuzz/regressions/" + name,
            "tests/fuzz/seeds/" + name,
        ],
        data = native.glob([
            "regressions/" + name + "/**",
            "seeds/" + name + "/**",
        ]),
        deps = [":" + name + "_fuzz_entry"],
    )

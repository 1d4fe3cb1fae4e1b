from streamlmu import cpu

XEON = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum\n"
        "flags\t\t: fpu avx2 fma avx512_vnni amx_bf16 amx_int8\n")
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd\n"


def test_cpu_instructions_are_read_from_the_flags_line():
    assert cpu.cpu_has(cpu.INT8_DOT_FLAGS, XEON) is True and cpu.cpu_has(cpu.BF16_FLAGS, XEON) is True
    assert cpu.cpu_has(cpu.INT8_DOT_FLAGS, EPYC) is False and cpu.cpu_has(cpu.BF16_FLAGS, EPYC) is False
    assert cpu.cpu_has(("avx512_vnni",), "flags\t: avx512_vnnix\n") is False  # whole flags only
    assert cpu.cpu_has(cpu.INT8_DOT_FLAGS, ARM) is None  # no x86 flags line: cannot tell


def test_cpu_model_name():
    assert cpu.cpu_model(EPYC) == "AMD EPYC" and cpu.cpu_model(ARM) is None

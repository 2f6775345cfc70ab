# sluice — GNU make. `make` builds build/sluice; `make test` runs the suite (installs missing
# Debian packages first). CUDA is built when nvcc is found; `make CUDA=0` forces CPU only.

NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA ?= $(if $(NVCC),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# 90a: Hopper's architecture-specific features (wgmma, kernels_wgmma.cu); runs on sm_90 GPUs.
CUDA_ARCHS ?= 89 90a

CC ?= gcc
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -I. -pthread -MMD -MP
LDLIBS = -lcjson -lpcre2-8 -luring -lzstd -lxxhash -lm -lpthread

BUILD := build
LIB_DIRS := base format quant model cpu text io stream
LIB_SRC := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
CLI_SRC := $(wildcard cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
GPU_TEST_SRC := $(wildcard tests/gpu/test_*.c)

ifeq ($(CUDA),1)
CU_SRC := $(wildcard cuda/*.cu)
CFLAGS += -DSL_HAVE_CUDA=1 -I$(CUDA_HOME)/include
NVCCFLAGS := -O2 -I. -std=c++17 -MMD -MP $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
             -Xcompiler -fPIC $(if $(filter 90a,$(CUDA_ARCHS)),-DSL_CUDA_SM90A=1)
CU_OBJ := $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
else
CU_OBJ :=
endif

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(CU_OBJ)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
GPU_TEST_OBJ := $(GPU_TEST_SRC:%.c=$(BUILD)/obj/%.o)

.PHONY: all deps test test-unit gpu-test clean lint demo bench

all: $(BUILD)/sluice

deps:
	@tools/install-deps.sh

# Objects depend on a stamp naming the configuration, so switching CUDA=0/1 rebuilds them.
CONFIG_STAMP := $(BUILD)/.config-cuda$(CUDA)
$(CONFIG_STAMP):
	@mkdir -p $(BUILD) && rm -f $(BUILD)/.config-cuda* && touch $@

$(BUILD)/obj/%.o: %.c $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libsluice.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/sluice: $(CLI_OBJ) $(BUILD)/libsluice.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libsluice.a $(LDLIBS)

$(BUILD)/tests/unit: $(TEST_OBJ) $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libsluice.a -lcriterion $(LDLIBS)

$(BUILD)/tests/gpu: $(GPU_TEST_OBJ) $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(GPU_TEST_OBJ) $(BUILD)/libsluice.a -lcriterion $(LDLIBS)

# The README's test command. Installs missing packages, builds everything, runs the suite.
# With CUDA the GPU suite is built too and run first: on a machine without a GPU it skips itself.
test: deps
	$(MAKE) $(BUILD)/sluice $(BUILD)/tests/unit $(if $(filter 1,$(CUDA)),$(BUILD)/tests/gpu)
	$(if $(filter 1,$(CUDA)),$(BUILD)/tests/gpu --jobs 1)
	$(BUILD)/tests/unit --jobs 2

# Runs on the lent GPU machine; skips cleanly without a GPU.
gpu-test: $(BUILD)/sluice $(BUILD)/tests/gpu
	$(BUILD)/tests/gpu

# The README's first command: the bundled default model (made once by `sluice synth --preset
# tiny`: DeepSeek-V3 architecture, the real tokenizer, random weights) answering a prompt.
DEMO_MODEL ?= $(BUILD)/demo-tiny.sluice
DEMO_TOKENIZER ?= ../shared/deepseek-v3/tokenizer.json
DEMO_PROMPT ?= Explain in one sentence why the sky is blue.
demo: deps
	$(MAKE) $(BUILD)/sluice
	test -f $(DEMO_MODEL) || $(BUILD)/sluice synth --preset tiny --tokenizer $(DEMO_TOKENIZER) $(DEMO_MODEL)
	$(BUILD)/sluice run $(DEMO_MODEL) --chat -p "$(DEMO_PROMPT)" -n 48 --seed 1

# Benchmarks (bench/): the codec everywhere, the kernels where CUDA is built.
BENCH_BINS := $(BUILD)/bench/codec $(if $(filter 1,$(CUDA)),$(BUILD)/bench/kernels)
bench: $(BENCH_BINS)
$(BUILD)/bench/codec: bench/codec.c $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libsluice.a $(LDLIBS)
KERNELS_BENCH_SRC := $(wildcard bench/kernels*.cu)
$(BUILD)/bench/kernels: $(KERNELS_BENCH_SRC) bench/kernels.h $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(NVCC) -O2 -std=c++17 -I. $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
	    -o $@ $(KERNELS_BENCH_SRC) $(BUILD)/libsluice.a -lcublas $(filter-out -lcudart_static,$(LDLIBS)) -lcudart_static

lint:
	clang-format --dry-run --Werror $(LIB_SRC) $(CLI_SRC) $(wildcard */*.h)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

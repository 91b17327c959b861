/*
 * A stand-in for libnccl.so.2 with nccl.h's exact signatures, for testing MeLlama's P/Invoke marshalling
 * without a GPU. It records each call's arguments (read back through fake_nccl_last_call), behaves like a
 * one-rank communicator on host memory (collectives copy send -> recv), and can be told to fail.
 * Built by the tests with the host C compiler.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct ncclComm* ncclComm_t;
typedef void* cudaStream_t;
typedef enum { ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3,
               ncclInvalidArgument = 4, ncclInvalidUsage = 5, ncclRemoteError = 6, ncclInProgress = 7 } ncclResult_t;
typedef enum { ncclInt8 = 0, ncclUint8 = 1, ncclInt32 = 2, ncclUint32 = 3, ncclInt64 = 4, ncclUint64 = 5,
               ncclFloat16 = 6, ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;

typedef struct {
    char name[32];
    uint64_t count;
    int32_t datatype, op, root, nranks, rank;
    uint32_t id_checksum;
    const void* send;
    void* recv;
    void* comm;
    void* stream;
    int32_t calls;
} FakeCall;

static FakeCall last;
static int calls;
static ncclResult_t next_error = ncclSuccess;
static ncclResult_t async_error = ncclSuccess;
static int version_code = 22103;

static size_t type_size(ncclDataType_t t) {
    switch (t) {
        case ncclInt8: case ncclUint8: return 1;
        case ncclFloat16: case ncclBfloat16: return 2;
        case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
        default: return 8;
    }
}

static ncclResult_t record(const char* name, const void* send, void* recv, size_t count, int type, int op, int root, ncclComm_t comm, cudaStream_t stream) {
    memset(&last, 0, sizeof last);
    strncpy(last.name, name, sizeof last.name - 1);
    last.send = send; last.recv = recv; last.count = count; last.datatype = type; last.op = op; last.root = root;
    last.comm = comm; last.stream = stream; last.calls = ++calls;
    ncclResult_t r = next_error;
    next_error = ncclSuccess;
    return r;
}

/* Test controls. */
const FakeCall* fake_nccl_last_call(void) { return &last; }
void fake_nccl_fail_next(int result) { next_error = (ncclResult_t)result; }
void fake_nccl_set_async_error(int result) { async_error = (ncclResult_t)result; }
void fake_nccl_set_version(int code) { version_code = code; }
void fake_nccl_reset(void) { memset(&last, 0, sizeof last); calls = 0; next_error = ncclSuccess; async_error = ncclSuccess; version_code = 22103; }

/* nccl.h */
ncclResult_t ncclGetVersion(int* version) { *version = version_code; return ncclSuccess; }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    for (int i = 0; i < 128; i++) id->internal[i] = (char)(i * 7 + 3);
    return record("ncclGetUniqueId", NULL, NULL, 0, 0, 0, 0, NULL, NULL);
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
    ncclResult_t r = record("ncclCommInitRank", NULL, NULL, 0, 0, 0, 0, NULL, NULL);
    uint32_t sum = 0;
    for (int i = 0; i < 128; i++) sum += (uint32_t)(unsigned char)commId.internal[i] * (uint32_t)(i + 1);
    last.id_checksum = sum; last.nranks = nranks; last.rank = rank;
    if (r != ncclSuccess) return r;
    if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    *comm = (ncclComm_t)(uintptr_t)(0x1000 + rank);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = record("ncclAllReduce", sendbuff, recvbuff, count, datatype, op, 0, comm, stream);
    if (r == ncclSuccess && sendbuff != recvbuff) memmove(recvbuff, sendbuff, count * type_size(datatype));
    return r;
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = record("ncclReduceScatter", sendbuff, recvbuff, recvcount, datatype, op, 0, comm, stream);
    if (r == ncclSuccess && sendbuff != recvbuff) memmove(recvbuff, sendbuff, recvcount * type_size(datatype));
    return r;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = record("ncclAllGather", sendbuff, recvbuff, sendcount, datatype, 0, 0, comm, stream);
    if (r == ncclSuccess && sendbuff != recvbuff) memmove(recvbuff, sendbuff, sendcount * type_size(datatype));
    return r;
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = record("ncclBroadcast", sendbuff, recvbuff, count, datatype, 0, root, comm, stream);
    if (r == ncclSuccess && sendbuff != recvbuff) memmove(recvbuff, sendbuff, count * type_size(datatype));
    return r;
}

ncclResult_t ncclGroupStart(void) { return record("ncclGroupStart", NULL, NULL, 0, 0, 0, 0, NULL, NULL); }
ncclResult_t ncclGroupEnd(void) { return record("ncclGroupEnd", NULL, NULL, 0, 0, 0, 0, NULL, NULL); }

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) { (void)comm; *asyncError = async_error; return ncclSuccess; }
ncclResult_t ncclCommAbort(ncclComm_t comm) { return record("ncclCommAbort", NULL, NULL, 0, 0, 0, 0, comm, NULL); }
ncclResult_t ncclCommDestroy(ncclComm_t comm) { return record("ncclCommDestroy", NULL, NULL, 0, 0, 0, 0, comm, NULL); }

const char* ncclGetErrorString(ncclResult_t result) {
    switch (result) {
        case ncclSuccess: return "no error";
        case ncclInvalidArgument: return "fake: invalid argument";
        case ncclRemoteError: return "fake: remote process exited or there was a network error";
        default: return "fake: other error";
    }
}

const char* ncclGetLastError(ncclComm_t comm) { (void)comm; return "fake last error detail"; }

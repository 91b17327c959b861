using System.Buffers;

namespace MeLlama.Distributed.Tcp;

/// <summary>A <see cref="Memory{T}"/> over tensor memory, so async socket calls read and write it without copies.</summary>
sealed unsafe class UnmanagedMemory(IntPtr address, int length) : MemoryManager<byte>
{
    public override Span<byte> GetSpan() => new((void*)address, length);
    public override MemoryHandle Pin(int elementIndex = 0) => new((byte*)address + elementIndex);
    public override void Unpin() { }
    protected override void Dispose(bool disposing) { }

    public static Memory<byte> Of(IntPtr address, int length) => new UnmanagedMemory(address, length).Memory;

    public static Span<byte> Span(IntPtr address, int length) => new((void*)address, length);
}

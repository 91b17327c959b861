namespace MeLlama.Data.Readers;

/// <summary>
/// Splits a byte stream into lines (\n or \r\n) without decoding, so each line can be checked for valid UTF-8
/// on its own. A line longer than the cap is reported (Line.TooLong) and skipped up to its end, in bounded memory.
/// </summary>
sealed class ByteLines(Stream stream, int maxLineBytes)
{
    byte[] _buf = new byte[1 << 16];
    int _start, _end;
    bool _eof;
    long _lineNo;

    public readonly record struct Line(long Number, ReadOnlyMemory<byte> Bytes, bool TooLong);

    public IEnumerable<Line> Read()
    {
        while (true)
        {
            int nl = Array.IndexOf(_buf, (byte)'\n', _start, _end - _start);
            if (nl >= 0)
            {
                _lineNo++;
                int len = nl - _start;
                if (len > 0 && _buf[nl - 1] == '\r') len--;
                yield return new Line(_lineNo, _buf.AsMemory(_start, len), false);
                _start = nl + 1;
                continue;
            }
            if (_eof)
            {
                if (_end > _start)
                {
                    _lineNo++;
                    int len = _end - _start;
                    if (_buf[_end - 1] == '\r') len--;
                    yield return new Line(_lineNo, _buf.AsMemory(_start, len), false);
                    _start = _end;
                }
                yield break;
            }
            if (_end - _start >= maxLineBytes)
            {
                _lineNo++;
                yield return new Line(_lineNo, ReadOnlyMemory<byte>.Empty, true);
                SkipToNewline();
                continue;
            }
            Fill();
        }
    }

    void Fill()
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buf, _start, _buf, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buf.Length) Array.Resize(ref _buf, Math.Min(_buf.Length * 2, Math.Max(maxLineBytes + 1, _buf.Length + 1)));
        int n = stream.Read(_buf, _end, _buf.Length - _end);
        if (n == 0) _eof = true;
        _end += n;
    }

    void SkipToNewline()
    {
        while (true)
        {
            int nl = Array.IndexOf(_buf, (byte)'\n', _start, _end - _start);
            if (nl >= 0) { _start = nl + 1; return; }
            _start = _end = 0;
            int n = stream.Read(_buf, 0, _buf.Length);
            if (n == 0) { _eof = true; return; }
            _end = n;
        }
    }
}

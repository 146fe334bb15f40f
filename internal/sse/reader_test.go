package sse

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t *testing.T, in string) ([]string, []string, error) {
	t.Helper()
	r := NewReader(strings.NewReader(in))
	var types, datas []string
	for {
		ev, err := r.Next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return types, datas, err
		}
		types = append(types, string(ev.Type))
		datas = append(datas, string(ev.Data))
	}
}

func TestReaderFraming(t *testing.T) {
	cases := []struct {
		name, in string
		types    []string
		datas    []string
		err      error
	}{
		{"lf", "event: a\ndata: {\"x\":1}\n\nevent: b\ndata: 2\n\n", []string{"a", "b"}, []string{`{"x":1}`, "2"}, nil},
		{"crlf", "event: a\r\ndata: 1\r\n\r\n", []string{"a"}, []string{"1"}, nil},
		{"multi-line data", "data: {\"a\":\ndata: 1}\n\n", []string{""}, []string{"{\"a\":\n1}"}, nil},
		{"comments and unknown fields", ": ping\n\nid: 7\nretry: 10\nevent: a\n: mid\ndata: 1\n\n", []string{"a"}, []string{"1"}, nil},
		{"no space after colon", "event:a\ndata:1\n\n", []string{"a"}, []string{"1"}, nil},
		{"missing final blank line", "event: a\ndata: 1\n", []string{"a"}, []string{"1"}, nil},
		{"cut mid-line", "event: a\ndata: {\"x\"", nil, nil, io.ErrUnexpectedEOF},
		{"type without data is dropped", "event: a\n\nevent: b\ndata: 1\n\n", []string{"b"}, []string{"1"}, nil},
		{"empty", "", nil, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			types, datas, err := readAll(t, c.in)
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if strings.Join(types, "|") != strings.Join(c.types, "|") || strings.Join(datas, "|") != strings.Join(c.datas, "|") {
				t.Fatalf("got %q %q, want %q %q", types, datas, c.types, c.datas)
			}
		})
	}
}

func TestReaderLargeEvent(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	types, datas, err := readAll(t, "event: big\ndata: "+big+"\n\nevent: next\ndata: 1\n\n")
	if err != nil || len(datas) != 2 || datas[0] != big || types[1] != "next" {
		t.Fatalf("err %v, %d events", err, len(datas))
	}
}

func TestReaderCap(t *testing.T) {
	r := NewReader(strings.NewReader("data: " + strings.Repeat("x", 4096) + "\n\n"))
	r.MaxEventBytes = 1024
	if _, err := r.Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("err %v", err)
	}
	r = NewReader(strings.NewReader("data: 12345\ndata: 67890\n\n"))
	r.MaxEventBytes = 8
	if _, err := r.Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("multi-line over the cap: err %v", err)
	}
}

func TestAppendEventRoundTrip(t *testing.T) {
	var b []byte
	b = AppendEvent(b, "response.created", []byte(`{"a":1}`))
	b = AppendEvent(b, "", []byte(`{"b":2}`))
	types, datas, err := readAll(t, string(b))
	if err != nil || strings.Join(types, ",") != "response.created," || strings.Join(datas, ",") != `{"a":1},{"b":2}` {
		t.Fatalf("%q %q %v", types, datas, err)
	}
}

// FuzzReader: whatever the bytes, the reader never panics, never returns
// more data than the cap, and re-encoding what it returns parses back to
// the same events.
func FuzzReader(f *testing.F) {
	for _, s := range []string{"event: a\ndata: 1\n\n", "data: x\r\ndata: y\r\n\r\n", ": c\n\n", "data", "\n\n\n", "data: " + strings.Repeat("z", 100) + "\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in))
		r.MaxEventBytes = 4096
		var out []byte
		var n int
		for {
			ev, err := r.Next()
			if err != nil {
				break
			}
			if len(ev.Data) > 4096 {
				t.Fatalf("data over the cap: %d", len(ev.Data))
			}
			if bytes.ContainsAny(ev.Type, "\n\r") {
				return // a type cannot be written back on one line
			}
			out = AppendEvent(out, string(ev.Type), ev.Data)
			n++
		}
		r2 := NewReader(bytes.NewReader(out))
		for i := 0; i < n; i++ {
			if _, err := r2.Next(); err != nil {
				t.Fatalf("re-encoded event %d: %v", i, err)
			}
		}
	})
}

func BenchmarkReader(b *testing.B) {
	ev := AppendEvent(nil, "response.output_text.delta", []byte(`{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello","logprobs":[],"obfuscation":"abcdefgh"}`))
	stream := bytes.Repeat(ev, 200)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	rd := bytes.NewReader(stream)
	r := NewReader(rd)
	for b.Loop() {
		rd.Reset(stream)
		r.Reset(rd)
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	}
}

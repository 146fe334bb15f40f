package billing

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The on-disk format is documented on Spool.
const (
	segMagic   = "rrspool1"
	segHeader  = int64(len(segMagic))
	frameHead  = 8
	ackEntry   = 12
	segSuffix  = ".seg"
	ackSuffix  = ".ack"
	lockName   = "LOCK"
	maxPayload = 16 << 20 // far above any real record; a larger length is garbage
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errTorn marks the end of the readable part of a file.
var errTorn = errors.New("billing: spool: torn or corrupt entry")

func segName(id uint64) string { return fmt.Sprintf("%020d%s", id, segSuffix) }
func ackName(id uint64) string { return fmt.Sprintf("%020d%s", id, ackSuffix) }

// appendFrame appends one record holding payload to b.
func appendFrame(b, payload []byte) []byte {
	var h [frameHead]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	sum := crc32.Update(crc32.Checksum(h[0:4], castagnoli), castagnoli, payload)
	binary.LittleEndian.PutUint32(h[4:8], sum)
	return append(append(b, h[:]...), payload...)
}

// readFrame reads one record into buf (grown as needed) and returns the
// payload and the bytes consumed. io.EOF means a clean end; errTorn a
// partial or corrupt record.
func readFrame(r io.Reader, buf []byte) (payload []byte, n int64, err error) {
	var h [frameHead]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.EOF {
			return nil, 0, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, errTorn
		}
		return nil, 0, err
	}
	size := binary.LittleEndian.Uint32(h[0:4])
	if size == 0 || size > maxPayload { // zeros are what a crash often leaves
		return nil, 0, errTorn
	}
	buf = slices.Grow(buf[:0], int(size))[:size]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
			return nil, 0, errTorn
		}
		return nil, 0, err
	}
	sum := crc32.Update(crc32.Checksum(h[0:4], castagnoli), castagnoli, buf)
	if sum != binary.LittleEndian.Uint32(h[4:8]) {
		return nil, 0, errTorn
	}
	return buf, frameHead + int64(size), nil
}

func ackBytes(off int64) [ackEntry]byte {
	var e [ackEntry]byte
	binary.LittleEndian.PutUint64(e[0:8], uint64(off))
	binary.LittleEndian.PutUint32(e[8:12], crc32.Checksum(e[0:8], castagnoli))
	return e
}

// segScan is what OpenSpool learns of a segment left by an earlier run.
type segScan struct {
	size         int64 // bytes up to the end of the last whole record
	records      int   // whole records
	unacked      int   // of those, not acknowledged
	unackedBytes int64
	torn         int64 // bytes after size, ignored
}

// scanSegment reads a segment and counts its records that acked lacks.
// A file shorter than the magic or starting with zeros is a segment whose
// creation a crash interrupted: it is empty.
func scanSegment(path string, acked map[int64]struct{}) (segScan, error) {
	var sc segScan
	f, err := os.Open(path)
	if err != nil {
		return sc, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return sc, err
	}
	r := bufio.NewReaderSize(f, 256<<10)
	var magic [segHeader]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil || magic == [segHeader]byte{} {
		sc.torn = st.Size()
		return sc, nil
	}
	if string(magic[:]) != segMagic {
		return sc, fmt.Errorf("billing: spool: %s is not a spool segment (or a newer format)", path)
	}
	sc.size = segHeader
	var buf []byte
	for {
		payload, n, err := readFrame(r, buf)
		if err == io.EOF {
			break
		}
		if err == errTorn {
			sc.torn = st.Size() - sc.size
			break
		}
		if err != nil {
			return sc, err
		}
		buf = payload
		sc.records++
		if _, ok := acked[sc.size]; !ok {
			sc.unacked++
			sc.unackedBytes += n
		}
		sc.size += n
	}
	return sc, nil
}

// loadAcks reads an ack log and cuts off a torn tail, so that appends
// continue on an entry boundary. A missing file has no entries.
func loadAcks(path string) (map[int64]struct{}, error) {
	acked := map[int64]struct{}{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return acked, nil
	}
	if err != nil {
		return nil, err
	}
	valid := 0
	for ; valid+ackEntry <= len(b); valid += ackEntry {
		e := b[valid : valid+ackEntry]
		if crc32.Checksum(e[0:8], castagnoli) != binary.LittleEndian.Uint32(e[8:12]) {
			break
		}
		acked[int64(binary.LittleEndian.Uint64(e[0:8]))] = struct{}{}
	}
	if valid < len(b) {
		if err := os.Truncate(path, int64(valid)); err != nil {
			return nil, err
		}
	}
	return acked, nil
}

// listSegments returns the ids of the segments in dir, in order, and
// removes ack logs whose segment is gone (a crash between the two
// removals of a finished segment).
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	segs := map[uint64]bool{}
	var acks []uint64
	for _, e := range entries {
		name := e.Name()
		base, suffix := strings.CutSuffix(name, segSuffix)
		if !suffix {
			base, suffix = strings.CutSuffix(name, ackSuffix)
			if !suffix {
				continue
			}
		}
		id, err := strconv.ParseUint(base, 10, 64)
		if err != nil || len(base) != 20 {
			continue
		}
		if strings.HasSuffix(name, segSuffix) {
			segs[id] = true
		} else {
			acks = append(acks, id)
		}
	}
	for _, id := range acks {
		if !segs[id] {
			if err := os.Remove(filepath.Join(dir, ackName(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
	}
	ids := make([]uint64, 0, len(segs))
	for id := range segs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

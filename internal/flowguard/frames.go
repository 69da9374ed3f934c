package flowguard

import "encoding/binary"

// HTTP/2 frame types and flags that the guard reads (RFC 9113, section 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	frameWindowUpdate = 0x8

	flagEndStream = 0x1
	flagAck       = 0x1 // on SETTINGS

	settingInitialWindowSize = 0x4

	// defaultWindow is the initial send window of a connection and of its streams until the
	// peer's SETTINGS say otherwise (RFC 9113, 6.9.2).
	defaultWindow = 65535

	// clientPreface starts every client's byte stream, before its first frame.
	clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

	// maxControlPayload bounds the payload the scanner keeps of the frames whose content it
	// reads (SETTINGS, WINDOW_UPDATE, RST_STREAM). grpc-go's server refuses frames over 16 KiB,
	// so nothing legitimate is cut; a longer payload is read only up to here.
	maxControlPayload = 16 << 10
)

// frame is one HTTP/2 frame as the scanner hands it on: its header, and for the control frames
// whose content matters (see wantPayload) their payload, which is only valid during the call.
type frame struct {
	length  uint32
	typ     uint8
	flags   uint8
	stream  uint32
	payload []byte
}

// scanner splits one direction of an HTTP/2 connection into frames, whatever the sizes of the
// reads or writes that carry the bytes. It keeps no frame bodies but the few bytes of the control
// frames the guard reads; the bytes of DATA and HEADERS frames are skipped, not copied.
type scanner struct {
	preface   int     // bytes of the client preface still to skip (incoming direction only)
	hdr       [9]byte // the frame header being assembled
	nhdr      int     // bytes of hdr filled
	cur       frame   // the frame whose payload is being read, once hdr is complete
	remaining uint32  // payload bytes of cur still to come
	keep      bool    // whether cur's payload is collected
	body      []byte  // collected payload of cur
}

// wantPayload says which frames' payloads the scanner collects.
func wantPayload(typ uint8) bool {
	return typ == frameSettings || typ == frameWindowUpdate || typ == frameRSTStream
}

// scan consumes p and calls fn for every frame completed in it, in order.
func (s *scanner) scan(p []byte, fn func(f frame)) {
	for len(p) > 0 {
		if s.preface > 0 {
			n := min(s.preface, len(p))
			s.preface -= n
			p = p[n:]
			continue
		}
		if s.nhdr < len(s.hdr) {
			n := copy(s.hdr[s.nhdr:], p)
			s.nhdr += n
			p = p[n:]
			if s.nhdr < len(s.hdr) {
				return
			}
			s.cur = frame{
				length: uint32(s.hdr[0])<<16 | uint32(s.hdr[1])<<8 | uint32(s.hdr[2]),
				typ:    s.hdr[3],
				flags:  s.hdr[4],
				stream: binary.BigEndian.Uint32(s.hdr[5:9]) & 0x7fffffff,
			}
			s.remaining = s.cur.length
			s.keep = wantPayload(s.cur.typ)
			s.body = s.body[:0]
			if s.remaining == 0 { // a frame without payload ends with its header
				s.emit(fn)
				continue
			}
		}
		n := min(uint32(len(p)), s.remaining)
		if s.keep && len(s.body) < maxControlPayload {
			s.body = append(s.body, p[:min(int(n), maxControlPayload-len(s.body))]...)
		}
		s.remaining -= n
		p = p[n:]
		if s.remaining == 0 {
			s.emit(fn)
		}
	}
}

func (s *scanner) emit(fn func(f frame)) {
	s.cur.payload = s.body
	fn(s.cur)
	s.nhdr = 0
}

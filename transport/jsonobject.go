package transport

// The fast path of DecodeCommand: a client frame that json.Valid accepted is
// split into its members in one pass, without encoding/json's reflection and
// its copy of every member. Whatever needs encoding/json's finer rules
// (escaped or non-ASCII member names) is left to encoding/json itself, so
// both paths decode every frame alike; FuzzSplitFrameMatchesEncodingJSON
// checks that.

// splitFrame fills f with the raw values of the members of the JSON object
// in frame, which must be valid JSON starting with '{' (after whitespace).
// Values alias frame with their capacity capped. A member name that matches
// a field case-insensitively fills it, and the last of duplicates wins, as
// with encoding/json. It reports false, leaving f partly filled, when a
// member name holds an escape or a non-ASCII byte.
func splitFrame(frame []byte, f *clientFrame) bool {
	i := skipSpace(frame, 0) + 1 // past '{'
	i = skipSpace(frame, i)
	if frame[i] == '}' {
		return true
	}
	for {
		nameStart := i + 1
		nameEnd := nameStart
		for frame[nameEnd] != '"' {
			if frame[nameEnd] == '\\' || frame[nameEnd] >= 0x80 {
				return false
			}
			nameEnd++
		}
		i = skipSpace(frame, nameEnd+1) + 1 // past ':'
		i = skipSpace(frame, i)
		valueEnd := skipValue(frame, i)
		if field := f.member(frame[nameStart:nameEnd]); field != nil {
			*field = frame[i:valueEnd:valueEnd]
		}
		i = skipSpace(frame, valueEnd)
		if frame[i] == '}' {
			return true
		}
		i = skipSpace(frame, i+1) // past ','
	}
}

// member returns the field an ASCII member name fills, or nil.
func (f *clientFrame) member(name []byte) *[]byte {
	var lower [16]byte
	if len(name) > len(lower) {
		return nil
	}
	for i, c := range name {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	switch string(lower[:len(name)]) {
	case "type":
		return (*[]byte)(&f.Type)
	case "channel":
		return (*[]byte)(&f.Channel)
	case "data":
		return (*[]byte)(&f.Data)
	case "id":
		return (*[]byte)(&f.ID)
	case "user":
		return (*[]byte)(&f.User)
	case "token":
		return (*[]byte)(&f.Token)
	case "presence":
		return (*[]byte)(&f.Presence)
	case "info":
		return (*[]byte)(&f.Info)
	case "recover":
		return (*[]byte)(&f.Recover)
	case "since":
		return (*[]byte)(&f.Since)
	case "limit":
		return (*[]byte)(&f.Limit)
	case "expect_offset":
		return (*[]byte)(&f.ExpectOffset)
	case "after":
		return (*[]byte)(&f.After)
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// skipValue returns the index just past the valid JSON value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just past the JSON string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

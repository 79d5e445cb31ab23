package proxmox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// pvesh's JSON is read field by field rather than into structs, so that
// an error names the field, and so that the forms PVE really prints are
// all accepted: its Perl encoder writes a value as a string or as a
// number depending on how the value was last used ("vmid":100 and
// "vmid":"100" both occur), and booleans as 0/1 or true/false.

// object is one JSON object of pvesh's output.
type object map[string]json.RawMessage

// decodeArray reads an array of objects and nothing after it.
func decodeArray(out []byte) ([]object, error) {
	var items []object
	if err := decodeWhole(out, &items); err != nil {
		return nil, err
	}
	for i, it := range items {
		if it == nil {
			return nil, fmt.Errorf("item %d is null, not an object", i)
		}
	}
	return items, nil
}

// decodeObject reads one object and nothing after it.
func decodeObject(out []byte) (object, error) {
	var o object
	if err := decodeWhole(out, &o); err != nil {
		return nil, err
	}
	if o == nil {
		return nil, errors.New("the output is null, not an object")
	}
	return o, nil
}

func decodeWhole(out []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(out))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("the output is empty, not JSON")
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("the output is a JSON %s where %s was expected", te.Value, describe(v))
		}
		return fmt.Errorf("the output is not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("the output has more after its JSON value")
	}
	return nil
}

func describe(v any) string {
	if _, ok := v.(*[]object); ok {
		return "an array of objects"
	}
	return "an object"
}

// kind names a JSON value's type for errors.
func kind(raw json.RawMessage) string {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 {
		return "nothing"
	}
	switch s[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// str reads a text field: a string, or a number as PVE wrote it.
// Absent and null are "".
func (o object) str(key string) (string, error) {
	raw, ok := o[key]
	if !ok {
		return "", nil
	}
	raw = bytes.TrimSpace(raw)
	switch kind(raw) {
	case "null":
		return "", nil
	case "a string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("field %q: %w", key, err)
		}
		return s, nil
	case "a number":
		return string(raw), nil
	}
	return "", fmt.Errorf("field %q is %s, not text", key, kind(raw))
}

// maxInt bounds the numbers read (exact in a float64, and an int on
// every platform); every field here is far below it.
const maxInt = min(1<<53, math.MaxInt)

// int reads a whole-number field: a number, a string holding one, or a
// boolean (1/0). Absent, null and "" are 0.
func (o object) int(key string) (int, error) {
	raw, ok := o[key]
	if !ok {
		return 0, nil
	}
	raw = bytes.TrimSpace(raw)
	text := string(raw)
	switch kind(raw) {
	case "null":
		return 0, nil
	case "a boolean":
		if text == "true" {
			return 1, nil
		}
		return 0, nil
	case "a string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("field %q: %w", key, err)
		}
		text = strings.TrimSpace(s)
		if text == "" {
			return 0, nil
		}
	case "a number":
	default:
		return 0, fmt.Errorf("field %q is %s, not a number", key, kind(raw))
	}
	if n, err := strconv.ParseInt(text, 10, 64); err == nil {
		if n > maxInt || n < -maxInt {
			return 0, fmt.Errorf("field %q: %s is out of range", key, text)
		}
		return int(n), nil
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return 0, fmt.Errorf("field %q: %q is not a number", key, text)
	}
	if f != math.Trunc(f) || math.Abs(f) > maxInt {
		return 0, fmt.Errorf("field %q: %s is not a whole number in range", key, text)
	}
	return int(f), nil
}

// fields reads several fields, stopping at the first error.
type fields struct {
	o   object
	err error
}

func (f *fields) str(key string) string {
	if f.err != nil {
		return ""
	}
	s, err := f.o.str(key)
	f.err = err
	return s
}

func (f *fields) int(key string) int {
	if f.err != nil {
		return 0
	}
	n, err := f.o.int(key)
	f.err = err
	return n
}

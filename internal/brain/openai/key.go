package openai

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxKeyBytes bounds a key file: API keys are a few hundred bytes, so a
// larger file is the wrong file.
const maxKeyBytes = 16 << 10

// KeyFromEnv reads the API key from the environment variable name (what
// ai.api_key_env names). Surrounding blanks are trimmed.
func KeyFromEnv(name string) (string, error) {
	if strings.TrimSpace(name) == "" {
		return "", errors.New("no environment variable named for the API key (ai.api_key_env is empty)")
	}
	v, ok := os.LookupEnv(name)
	if !ok {
		return "", fmt.Errorf("the API key variable %s (ai.api_key_env) is not set", name)
	}
	key := strings.TrimSpace(v)
	if key == "" {
		return "", fmt.Errorf("the API key variable %s (ai.api_key_env) is empty", name)
	}
	if err := checkKey(key); err != nil {
		return "", fmt.Errorf("the API key in %s: %w", name, err)
	}
	return key, nil
}

// KeyFromFile reads the API key from a file that only its owner can
// read: a key file readable by the group or others is refused, because
// anyone who can read it can spend the account. The first non-blank line
// is the key.
func KeyFromFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("API key file: %w", err)
	}
	defer f.Close()
	// Check the file opened, not the path again: nothing can swap it in
	// between.
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("API key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("API key file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("API key file %s is readable or writable by group or others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyBytes+1))
	if err != nil {
		return "", fmt.Errorf("API key file %s: %w", path, err)
	}
	if len(b) > maxKeyBytes {
		return "", fmt.Errorf("API key file %s is over %d KiB: not a key file", path, maxKeyBytes>>10)
	}
	var key string
	for _, line := range strings.Split(string(b), "\n") {
		if key = strings.TrimSpace(line); key != "" {
			break
		}
	}
	if key == "" {
		return "", fmt.Errorf("API key file %s is empty", path)
	}
	if err := checkKey(key); err != nil {
		return "", fmt.Errorf("API key file %s: %w", path, err)
	}
	return key, nil
}

// checkKey refuses keys that cannot go into an HTTP header; the message
// never quotes the key.
func checkKey(key string) error {
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("the API key contains a control character at byte %d", i+1)
		}
	}
	return nil
}

package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
)

// MinTokenBytes is the shortest bearer token accepted: shorter ones are
// guessable.
const MinTokenBytes = 32

// Tokens maps HTTP bearer tokens to identities. Only the SHA-256 of each
// token is kept in memory, and a lookup compares every entry in constant
// time.
type Tokens struct {
	entries []tokenEntry
}

type tokenEntry struct {
	sum [sha256.Size]byte
	id  Identity
}

// ParseTokens reads a token file: one "IDENTITY TOKEN" a line, e.g.
//
//	dtx://client/web   3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
//	dtx://admin/oncall Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg
//
// Blank lines and lines starting with # are skipped. A token is at least
// MinTokenBytes printable bytes without spaces; two lines with the same
// token are refused.
func ParseTokens(data []byte) (*Tokens, error) {
	t := &Tokens{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<16)
	seen := map[[sha256.Size]byte]int{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("auth: token file line %d: want IDENTITY TOKEN", n)
		}
		id, err := ParseURI(fields[0])
		if err != nil {
			return nil, fmt.Errorf("auth: token file line %d: %w", n, err)
		}
		if id.Role == RoleCoordinator || id.Role == RoleParticipant {
			return nil, fmt.Errorf("auth: token file line %d: %s: components authenticate with certificates, not tokens", n, id)
		}
		tok := fields[1]
		if len(tok) < MinTokenBytes {
			return nil, fmt.Errorf("auth: token file line %d: token of %d bytes; at least %d are required", n, len(tok), MinTokenBytes)
		}
		for _, c := range []byte(tok) {
			if c < 0x21 || c > 0x7e {
				return nil, fmt.Errorf("auth: token file line %d: the token has a byte that is not printable ASCII", n)
			}
		}
		sum := sha256.Sum256([]byte(tok))
		if prev, dup := seen[sum]; dup {
			return nil, fmt.Errorf("auth: token file line %d: the same token as line %d", n, prev)
		}
		seen[sum] = n
		t.entries = append(t.entries, tokenEntry{sum: sum, id: id})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth: token file: %w", err)
	}
	if len(t.entries) == 0 {
		return nil, fmt.Errorf("auth: token file has no token")
	}
	return t, nil
}

// LoadTokens reads a token file (ParseTokens). It refuses a file that other
// users may read or write.
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat() // of the file opened, not of whatever the path names later
	if err != nil {
		return nil, fmt.Errorf("auth: token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("auth: token file %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("auth: token file %s is open to other users (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("auth: token file %s belongs to uid %d, not to this process's user (%d)", path, sys.Uid, os.Geteuid())
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("auth: token file: %w", err)
	}
	t, err := ParseTokens(data)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return t, nil
}

// Lookup returns the identity of a bearer token.
func (t *Tokens) Lookup(token string) (Identity, bool) {
	if t == nil {
		return Identity{}, false
	}
	sum := sha256.Sum256([]byte(token))
	var found Identity
	hit := 0
	for i := range t.entries {
		eq := subtle.ConstantTimeCompare(sum[:], t.entries[i].sum[:])
		if eq == 1 {
			found = t.entries[i].id
		}
		hit |= eq
	}
	return found, hit == 1
}

// FromBearer returns the identity of an HTTP request's bearer token
// (Authorization: Bearer TOKEN); ok is false if it carries none.
func (t *Tokens) FromBearer(r *http.Request) (id Identity, ok bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return Identity{}, false, nil
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return Identity{}, true, fmt.Errorf("auth: Authorization header: want Bearer TOKEN")
	}
	id, found := t.Lookup(strings.TrimSpace(tok))
	if !found {
		return Identity{}, true, fmt.Errorf("auth: unknown bearer token")
	}
	return id, true, nil
}

// NewToken returns a fresh random token (32 bytes, base64url).
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

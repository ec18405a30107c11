package pgpart

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxTxIDLen is the longest transaction id dtx accepts, in bytes.
const MaxTxIDLen = 128

// maxGIDLen is PostgreSQL's limit on a prepared transaction's identifier
// (GIDSIZE is 200 bytes including the terminating NUL).
const maxGIDLen = 199

// gidVersion starts every gid this package writes.
const gidVersion = "dtx1"

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	rawTxRE  = regexp.MustCompile(`^[A-Za-z0-9_:-]+$`)
	ownerB32 = base32.StdEncoding.WithPadding(base32.NoPadding)
)

// OwnerTag returns the 8-character tag that names (group, participant,
// database) in gids: the first 40 bits of SHA-256 of the three names,
// base32. The tag, not the names, goes into the gid, because PostgreSQL
// leaves only 199 bytes for it and a transaction id may take 172 of them;
// the dtx_owners table maps each tag back to its names (and detects a
// collision). The database is part of it because gids are unique in the
// whole PostgreSQL server, not per database: the same participant on two
// databases of one server must not collide.
func OwnerTag(group, participant, database string) string {
	h := sha256.Sum256([]byte(group + "\x00" + participant + "\x00" + database))
	return strings.ToLower(ownerB32.EncodeToString(h[:5]))
}

// checkName validates a group or participant name.
func checkName(what, s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("pgpart: bad %s name %q: want 1-63 characters of A-Z a-z 0-9 _ . - starting with a letter or digit", what, s)
	}
	return nil
}

// CheckTxID reports whether tx can name a branch: 1 to 128 bytes of valid
// UTF-8 (any characters, quotes included).
func CheckTxID(tx string) error {
	switch {
	case tx == "":
		return fmt.Errorf("pgpart: empty transaction id")
	case len(tx) > MaxTxIDLen:
		return fmt.Errorf("pgpart: transaction id is %d bytes, longer than %d", len(tx), MaxTxIDLen)
	case !utf8.ValidString(tx):
		return fmt.Errorf("pgpart: transaction id %q is not valid UTF-8", tx)
	}
	return nil
}

// GID returns the PostgreSQL prepared-transaction identifier of attempt
// attempt of tx's branch at owner (OwnerTag):
//
//	dtx1.<owner>.<attempt>.<tx>
//
// where <tx> is "r" followed by the id itself when it is made only of
// A-Z a-z 0-9 _ : - (readable in pg_prepared_xacts), and otherwise "b"
// followed by the id in unpadded base64url. A gid is therefore made only
// of A-Z a-z 0-9 _ : . - and is at most 5+8+1+10+1+172 = 197 bytes: it can
// be quoted as an SQL literal with no input able to break out of it.
func GID(owner, tx string, attempt uint32) (string, error) {
	if err := CheckTxID(tx); err != nil {
		return "", err
	}
	if attempt == 0 {
		attempt = 1
	}
	var enc string
	if rawTxRE.MatchString(tx) {
		enc = "r" + tx
	} else {
		enc = "b" + base64.RawURLEncoding.EncodeToString([]byte(tx))
	}
	g := gidVersion + "." + owner + "." + strconv.FormatUint(uint64(attempt), 10) + "." + enc
	if len(g) > maxGIDLen || !safeGID(g) {
		return "", fmt.Errorf("pgpart: gid %q does not fit PostgreSQL's limits", g) // unreachable for a valid owner tag
	}
	return g, nil
}

// gidPrefix is what every gid of owner starts with.
func gidPrefix(owner string) string { return gidVersion + "." + owner + "." }

// ParseGID splits a gid written by GID into its owner tag, transaction id
// and attempt.
func ParseGID(gid string) (owner, tx string, attempt uint32, err error) {
	parts := strings.SplitN(gid, ".", 4)
	if len(parts) != 4 || parts[0] != gidVersion || len(parts[3]) < 2 {
		return "", "", 0, fmt.Errorf("pgpart: %q is not a dtx gid", gid)
	}
	a, err := strconv.ParseUint(parts[2], 10, 32)
	if err != nil || a == 0 {
		return "", "", 0, fmt.Errorf("pgpart: gid %q: bad attempt", gid)
	}
	switch enc := parts[3]; enc[0] {
	case 'r':
		tx = enc[1:]
	case 'b':
		b, err := base64.RawURLEncoding.DecodeString(enc[1:])
		if err != nil {
			return "", "", 0, fmt.Errorf("pgpart: gid %q: bad transaction id encoding: %v", gid, err)
		}
		tx = string(b)
	default:
		return "", "", 0, fmt.Errorf("pgpart: gid %q: unknown transaction id encoding", gid)
	}
	return parts[1], tx, uint32(a), nil
}

// safeGID reports whether g is made only of characters that need no
// quoting inside an SQL string literal.
func safeGID(g string) bool {
	for i := 0; i < len(g); i++ {
		c := g[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// quoteGID returns g as an SQL string literal. The statements that take a
// gid (PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED) accept no
// bind parameter; g is checked to be made of safe characters only, and
// quoted as a literal all the same.
func quoteGID(g string) (string, error) {
	if len(g) == 0 || len(g) > maxGIDLen || !safeGID(g) {
		return "", fmt.Errorf("pgpart: refusing unsafe gid %q", g)
	}
	return "'" + strings.ReplaceAll(g, "'", "''") + "'", nil
}

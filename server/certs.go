package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dtx-dev/dtx/auth"
	"github.com/dtx-dev/dtx/twopc"
)

// CertIdentity reads a name of WriteCerts: "coordinator", a participant's
// bare node name ("inventory"), or ROLE/NAME ("client/web", "app/shop",
// "admin/oncall", "participant/shipping").
func CertIdentity(name string) (auth.Identity, error) {
	switch {
	case name == twopc.CoordinatorID:
		return auth.Coordinator, nil
	case strings.Contains(name, "/"):
		return auth.ParseURI(auth.Scheme + "://" + name)
	}
	if err := auth.ValidName(name); err != nil {
		return auth.Identity{}, fmt.Errorf("server: certificate name %q: %w", name, err)
	}
	return auth.Participant(name), nil
}

// extKeyUsage is what a certificate of id may be used for: a component
// serves and dials; a client, app or admin only dials (it can never serve
// as anyone).
func extKeyUsage(id auth.Identity) []x509.ExtKeyUsage {
	if id.Node() != "" {
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
}

// CertFileBase is the file name (without .pem) of a WriteCerts name
// ("client/web" -> "client-web").
func CertFileBase(name string) string { return strings.ReplaceAll(name, "/", "-") }

// WriteCerts makes a throw-away CA and one certificate per name in dir:
// ca.pem (and ca-key.pem), NAME.pem and NAME-key.pem ("/" in a name becomes
// "-"). Each certificate carries its dtx identity (CertIdentity) as a URI
// SAN and as its CommonName, is valid for localhost and 127.0.0.1, as
// server and as client. It is for try-outs and tests (`dtx cluster
// certs`); a real deployment brings its own PKI, with the same URI SANs.
// It returns the TLSFiles of each name.
func WriteCerts(dir string, names []string, valid time.Duration) (map[string]*TLSFiles, error) {
	ids := make([]auth.Identity, len(names))
	for i, n := range names {
		id, err := CertIdentity(n)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dtx try-out CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(valid),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	caPath := filepath.Join(dir, "ca.pem")
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, "ca-key.pem"), "PRIVATE KEY", caKeyDER, 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(caPath, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	out := map[string]*TLSFiles{}
	for i, name := range names {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial,
			Subject:      pkix.Name{CommonName: ids[i].URI()},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			URIs:         []*url.URL{auth.IdentityURL(ids[i])},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(valid),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  extKeyUsage(ids[i]),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		base := CertFileBase(name)
		f := &TLSFiles{Cert: filepath.Join(dir, base+".pem"), Key: filepath.Join(dir, base+"-key.pem"), CA: caPath}
		if err := writePEM(f.Key, "PRIVATE KEY", keyDER, 0o600); err != nil {
			return nil, err
		}
		if err := writePEM(f.Cert, "CERTIFICATE", der, 0o644); err != nil {
			return nil, err
		}
		out[name] = f
	}
	return out, nil
}

// EnsureCerts returns the certificates of names in dir, made by WriteCerts
// on first use and reused afterwards (a cluster restarted on the same
// directory keeps its CA). If any file is missing, all are made anew.
func EnsureCerts(dir string, names []string, valid time.Duration) (map[string]*TLSFiles, bool, error) {
	out := map[string]*TLSFiles{}
	caPath := filepath.Join(dir, "ca.pem")
	complete := fileExists(caPath)
	for _, name := range names {
		base := CertFileBase(name)
		f := &TLSFiles{Cert: filepath.Join(dir, base+".pem"), Key: filepath.Join(dir, base+"-key.pem"), CA: caPath}
		if complete {
			if _, _, err := f.Load(); err != nil {
				complete = false
			}
		}
		out[name] = f
	}
	if complete {
		return out, false, nil
	}
	files, err := WriteCerts(dir, names, valid)
	return files, true, err
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	// A file left by an earlier run keeps its mode under os.WriteFile: make
	// it anew, so that a key is never left readable by others.
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	return nil
}

package redact

import (
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// Fake credentials in the formats the recognisers know. The AWS pair is
// the one AWS documentation uses as an example.
const (
	awsKeyID   = "AKIAIOSFODNN7EXAMPLE"
	awsTempID  = "ASIAY34FZKBOKMUTVV7A"
	awsSecret  = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	gcpAPIKey  = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
	ghPAT      = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3sXY"
	ghFine     = "github_pat_11ABCDEFG0abcdefghijklmn_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"
	slackBot   = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
	openAIKey  = "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90"
	nannyToken = "nsk_8f3a9c2e7b1d4f6a0c5e9b2d7f1a3c8e"
	jwt        = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudCIsImV4cCI6MTcwMDAwMDAwMH0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	basicCred  = "YWRtaW46aHVudGVyMg==" // admin:hunter2
	rsaBody    = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\nLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// Authorization headers and schemes.
		{"Authorization: Bearer abc.def-123", "Authorization: Bearer [REDACTED]"},
		{"authorization: bearer x", "authorization: bearer [REDACTED]"},
		{"> Authorization: Basic " + basicCred, "> Authorization: Basic [REDACTED]"},
		{`curl -H "Authorization: Bearer ` + nannyToken + `" https://api.example.com/api/agent`, `curl -H "Authorization: Bearer [REDACTED]" https://api.example.com/api/agent`},
		{"curl -H Authorization:Bearer tok3nValue99 https://x", "curl -H Authorization:Bearer [REDACTED] https://x"},
		{`{"Authorization": "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"}`, `{"Authorization": "Token [REDACTED]"}`},
		{`Authorization: Digest username="u", realm="r", nonce="n", response="6629fae49393a05397450978507c4ef1"`, `Authorization: Digest [REDACTED]`},
		{"Authorization: opaquevalue", "Authorization: [REDACTED]"},
		{"Proxy-Authorization: Basic " + basicCred, "Proxy-Authorization: Basic [REDACTED]"},
		{"sent bearer eyJ0b2tlbiI6MX0abc123 to the API", "sent bearer [REDACTED] to the API"},
		{"login failed: Basic " + basicCred + " rejected", "login failed: Basic [REDACTED] rejected"},
		// JWTs, vendor tokens.
		{"token " + jwt + " expired", "token [REDACTED] expired"},
		{"id_token=" + jwt, "id_token=[REDACTED]"},
		{"key id " + awsKeyID + " used", "key id AKIA[REDACTED] used"},
		{"session " + awsTempID, "session ASIA[REDACTED]"},
		{"maps key " + gcpAPIKey, "maps key AIza[REDACTED]"},
		{"remote: " + ghPAT, "remote: ghp_[REDACTED]"},
		{"GH=" + ghFine, "GH=github_pat_[REDACTED]"},
		{"slack " + slackBot, "slack xoxb-[REDACTED]"},
		{"using " + openAIKey, "using sk-[REDACTED]"},
		{"register with " + nannyToken, "register with nsk_[REDACTED]"},
		{"root:$6$rounds=5000$saltsalt$9Bfs/QbYtW8uKsSmjQe8Bd.D6fDy6tqU5nVs6o/aYz1b2:19700:0:99999:7:::", "root:$6$[REDACTED]:19700:0:99999:7:::"},
		// AWS credentials.
		{"aws_secret_access_key = " + awsSecret, "aws_secret_access_key = [REDACTED]"},
		{"AWS_SECRET_ACCESS_KEY=" + awsSecret, "AWS_SECRET_ACCESS_KEY=[REDACTED]"},
		{"aws_access_key_id = " + awsKeyID, "aws_access_key_id = [REDACTED]"},
		{"AWS_SESSION_TOKEN=FwoGZXIvYXdzEBYaDHqa0AP", "AWS_SESSION_TOKEN=[REDACTED]"},
		// GCP service account JSON.
		{`  "private_key_id": "8f2b1c9d0e3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c",`, `  "private_key_id": "[REDACTED]",`},
		{`"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n",`, `"private_key": "[REDACTED]",`},
		{`"tls.key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n",`, `"tls.key": "-----BEGIN PRIVATE KEY-----\n[REDACTED]\n-----END PRIVATE KEY-----\n",`},
		{`"token_uri": "https://oauth2.googleapis.com/token",`, `"token_uri": "https://oauth2.googleapis.com/token",`},
		// Private key blocks.
		{"-----BEGIN RSA PRIVATE KEY-----\n" + rsaBody + "\n-----END RSA PRIVATE KEY-----\n", "-----BEGIN RSA PRIVATE KEY-----\n[REDACTED]\n-----END RSA PRIVATE KEY-----\n"},
		{"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----\n[REDACTED]\n-----END OPENSSH PRIVATE KEY-----"},
		{"-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,2A3B4C5D6E7F8091A2B3C4D5E6F70819\n\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oY8J5XkQ2b3RoAoGCCqGSM49\n-----END EC PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----\n[REDACTED]\n-----END EC PRIVATE KEY-----"},
		{"-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBF0AAAABCAC7pV1ZMcvQm1gQ9dHw\n=x3Yz\n-----END PGP PRIVATE KEY BLOCK-----", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n[REDACTED]\n-----END PGP PRIVATE KEY BLOCK-----"},
		{"KEY=-----BEGIN PRIVATE KEY----- MIIEvQIBADANBgkqhkiG9w0 BAQEFAASC -----END PRIVATE KEY-----", "KEY=-----BEGIN PRIVATE KEY----- [REDACTED] -----END PRIVATE KEY-----"},
		{"    -----BEGIN RSA PRIVATE KEY-----\n    MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n    -----END RSA PRIVATE KEY-----", "    -----BEGIN RSA PRIVATE KEY-----\n    [REDACTED]\n    -----END RSA PRIVATE KEY-----"},
		{"$ head -3 id_rsa\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n$ df -h", "$ head -3 id_rsa\n-----BEGIN RSA PRIVATE KEY-----\n[REDACTED]\n$ df -h"},
		// key=value, JSON, YAML, ini, XML.
		{"password=hunter2", "password=[REDACTED]"},
		{"passwd=hunter2 user=bob", "passwd=[REDACTED] user=bob"},
		{"Pwd=s3cr3t;Server=db1;Uid=app", "Pwd=[REDACTED];Server=db1;Uid=app"},
		{"https://api.example.com/v1/items?api_key=abc123&page=2", "https://api.example.com/v1/items?api_key=[REDACTED]&page=2"},
		{"apikey=abc123 access_key=def456", "apikey=[REDACTED] access_key=[REDACTED]"},
		{"client_secret=GOCSPX-abcdefghijklmnop", "client_secret=[REDACTED]"},
		{"secret: 'a b c'", "secret: '[REDACTED]'"},
		{`{"password":"hunter2","user":"bob"}`, `{"password":"[REDACTED]","user":"bob"}`},
		{`{"password": "hun\"ter2", "pin": 1234}`, `{"password": "[REDACTED]", "pin": 1234}`},
		{`{"api_key": 12345678}`, `{"api_key": [REDACTED]}`},
		{"  password: correct horse battery staple", "  password: [REDACTED]"},
		{"- token: abc123", "- token: [REDACTED]"},
		{"database:\n  password: \"p@ss word\"\n  host: db", "database:\n  password: \"[REDACTED]\"\n  host: db"},
		{"db_password = my pass phrase", "db_password = [REDACTED]"},
		{"<password>hunter2</password>", "<password>[REDACTED]</password>"},
		{`<user name="tomcat" password="s3cret" roles="manager-gui"/>`, `<user name="tomcat" password="[REDACTED]" roles="manager-gui"/>`},
		{`{'password': 'hunter2'}`, `{'password': '[REDACTED]'}`},
		{`$db = array('password' => 'hunter2');`, `$db = array('password' => '[REDACTED]');`},
		{`"env": "A=1\nDB_PASSWORD=hunter2\nB=2"`, `"env": "A=1\nDB_PASSWORD=[REDACTED]\nB=2"`},
		{`{\"password\":\"hunter2\"}`, `{\"password\":\"[REDACTED]\"}`},
		{"psk=\"wifi passphrase\"", "psk=\"[REDACTED]\""},
		{"password=", "password="},
		{`{"password": null, "token": "", "secret": {"value": "x"}}`, ""},
		{"stringData:\n  password: |\n    first line\n\n    second line\n  user: bob\n", "stringData:\n  password: |\n    [REDACTED]\n  user: bob\n"},
		{"- name: db\n  token: >-\n    abc\n    def\nnext: 1", "- name: db\n  token: >-\n    [REDACTED]\nnext: 1"},
		{"password=\"unterminated secret", "password=\"[REDACTED]"},
		// Command lines.
		{"mysqld --password=hunter2 --user=mysql", "mysqld --password=[REDACTED] --user=mysql"},
		{"app --password hunter2 --port 80", "app --password [REDACTED] --port 80"},
		{"app --password --port 80", "app --password --port 80"},
		{"app\x00--token\x00tok123\x00--verbose", "app\x00--token\x00[REDACTED]\x00--verbose"},
		{"java -Djavax.net.ssl.keyStorePassword=changeit -jar app.jar", "java -Djavax.net.ssl.keyStorePassword=[REDACTED] -jar app.jar"},
		{"mysql -u root -p'hunter 2' db", "mysql -u root -p'[REDACTED]' db"},
		{"mysqldump -uroot -phunter2 db", "mysqldump -uroot -p[REDACTED] db"},
		{"mysql -u root -p db", "mysql -u root -p db"},
		{"sshpass -p hunter2 ssh host", "sshpass -p [REDACTED] ssh host"},
		{"curl -u admin:hunter2 https://x", "curl -u admin:[REDACTED] https://x"},
		{"redis-cli -a hunter2 ping", "redis-cli -a [REDACTED] ping"},
		{"smbclient //srv/share -U alice%hunter2", "smbclient //srv/share -U alice%[REDACTED]"},
		{"openssl rsa -in k.pem -passin pass:hunter2", "openssl rsa -in k.pem -passin pass:[REDACTED]"},
		{"mount -t cifs //srv/s /mnt -o username=bob,password=hunter2,vers=3.0", "mount -t cifs //srv/s /mnt -o username=bob,password=[REDACTED],vers=3.0"},
		{"kube-apiserver --token-auth-file=/etc/kubernetes/tokens.csv --kubelet-client-key=/etc/kubernetes/pki/kc.key", "kube-apiserver --token-auth-file=/etc/kubernetes/tokens.csv --kubelet-client-key=/etc/kubernetes/pki/kc.key"},
		// Environment dumps.
		{"DB_PASSWORD=hunter2", "DB_PASSWORD=[REDACTED]"},
		{"GITHUB_TOKEN=" + ghPAT, "GITHUB_TOKEN=[REDACTED]"},
		{"export STRIPE_KEY=rk_abc123", "export STRIPE_KEY=[REDACTED]"},
		{"APP_SECRET_VALUE=x9y8", "APP_SECRET_VALUE=[REDACTED]"},
		{"PGPASSWORD=hunter2", "PGPASSWORD=[REDACTED]"},
		{"MYSQL_PWD=hunter2", "MYSQL_PWD=[REDACTED]"},
		{"REDISCLI_AUTH=hunter2", "REDISCLI_AUTH=[REDACTED]"},
		{"PWD=/root\nOLDPWD=/tmp", "PWD=/root\nOLDPWD=/tmp"},
		{"SSH_AUTH_SOCK=/tmp/ssh-XXXX/agent.1", "SSH_AUTH_SOCK=/tmp/ssh-XXXX/agent.1"},
		{"HOME=/root\x00API_KEY=abc123\x00TERM=xterm", "HOME=/root\x00API_KEY=[REDACTED]\x00TERM=xterm"},
		{`Environment="DB_PASSWORD=two words"`, `Environment="DB_PASSWORD=[REDACTED]"`},
		{"CONFIG_SECRETMEM=y\nCONFIG_MODULE_SIG_KEY=\"certs/signing_key.pem\"", "CONFIG_SECRETMEM=y\nCONFIG_MODULE_SIG_KEY=\"certs/signing_key.pem\""},
		// URLs with credentials.
		{"DATABASE_URL=postgres://app:hunter2@db.internal:5432/app", "DATABASE_URL=postgres://app:[REDACTED]@db.internal:5432/app"},
		{"redis://:hunter2@127.0.0.1:6379/0", "redis://:[REDACTED]@127.0.0.1:6379/0"},
		{"git clone https://x-access-token:abc@def@github.com/o/r.git", "git clone https://x-access-token:[REDACTED]@github.com/o/r.git"},
		{"ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"},
		{"curl --user=admin:hunter2 -X POST https://x", "curl --user=admin:[REDACTED] -X POST https://x"},
		{"curl -uadmin:hunter2 https://x", "curl -uadmin:[REDACTED] https://x"},
		{"wget --proxy-user=bob:\"hunter 2\" https://x", "wget --proxy-user=bob:\"[REDACTED]\" https://x"},
		{"curl -u admin https://x", ""},
		{"curl -u 'admin:hunter2' https://x", "curl -u 'admin:[REDACTED]' https://x"},
		{"sshpass -phunter2 scp f host:", "sshpass -p[REDACTED] scp f host:"},
		{"smbclient //srv/s --user=alice%hunter2", "smbclient //srv/s --user=alice%[REDACTED]"},
		{"openssl enc -aes-256-cbc -k hunter2 -in f", "openssl enc -aes-256-cbc -k [REDACTED] -in f"},
		{"docker run -u 1000:1000 -p 8080:80 nginx", ""},
		{`"Env": ["PATH=/usr/bin", "DB_PASSWORD=two words", "HOME=/root"]`, `"Env": ["PATH=/usr/bin", "DB_PASSWORD=[REDACTED]", "HOME=/root"]`},
		{`"cmd": "sh -c \"DB_PASSWORD=two words run\""`, `"cmd": "sh -c \"DB_PASSWORD=[REDACTED]\""`},
		{"-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\n-----END CERTIFICATE-----", ""},
		{"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----", ""},
		{"grep -r 'BEGIN RSA PRIVATE KEY' /etc\n/etc/ssl/private/a.key:-----BEGIN RSA PRIVATE KEY-----\n/etc/ssl/private/b.key:-----BEGIN RSA PRIVATE KEY-----", ""},
		{"-----BEGIN DSA PRIVATE KEY-----MIIBuwIBAAKBgQC-----END DSA PRIVATE KEY-----", "-----BEGIN DSA PRIVATE KEY-----[REDACTED]-----END DSA PRIVATE KEY-----"},
		{"token dop_v1_" + strings.Repeat("a1b2c3d4", 8), "token dop_v1_[REDACTED]"},
		{"jwe eyJhbGciOiJSU0EtT0FFUCJ9.ZW5jcnlwdGVka2V5.aXZpdg.Y2lwaGVydGV4dA.dGFn end", "jwe [REDACTED] end"},
		{"blob QUJDeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.sig eyJhbGciOiJIUzI1NiJ9.x", ""},
		{"Authorization: Bearer", ""},
		{"Basic aGVsbG8gd29ybGQ= is not a credential", ""},
		{"AKIAIOSFODNN7EXAMPLEXYZ is too long, AKIA1234 too short", ""},
		{"Set-Cookie: a=1 Set-Cookie: b=2; Path=/", "Set-Cookie: a=[REDACTED]; Path=/"},
		{"secret: |\r\n  line one\r\n  line two\r\nother: 1", "secret: |\r\n  [REDACTED]\r\nother: 1"},
		{"  machine h login u password hunter2", "  machine h login u password [REDACTED]"},
		{"IDENTIFIED BY hunter2", ""},
		{"IDENTIFIED WITH caching_sha2_password AS '$A$005$abcdefghijklmnopqrstu'", "IDENTIFIED WITH caching_sha2_password AS '[REDACTED]'"},
		// Cookies.
		{"Cookie: session=abc123; theme=dark", "Cookie: session=[REDACTED]; theme=[REDACTED]"},
		{"< Set-Cookie: sid=abc123; Path=/; HttpOnly; Secure", "< Set-Cookie: sid=[REDACTED]; Path=/; HttpOnly; Secure"},
		// SQL and netrc.
		{"CREATE USER 'app'@'%' IDENTIFIED BY 'hunter2';", "CREATE USER 'app'@'%' IDENTIFIED BY '[REDACTED]';"},
		{"ALTER ROLE app WITH PASSWORD 'hunter2';", "ALTER ROLE app WITH PASSWORD '[REDACTED]';"},
		{"machine api.example.com login bob password hunter2", "machine api.example.com login bob password [REDACTED]"},
		{"requirepass foobared", "requirepass [REDACTED]"},
		// Innocent text stays.
		{"Jan 12 10:00:01 web sshd[812]: Failed password for invalid user admin from 203.0.113.7 port 50522 ssh2", ""},
		{"Jan 12 10:00:02 web sshd[812]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7  user=root", ""},
		{"Jan 12 10:00:03 web passwd[900]: pam_unix(passwd:chauthtok): password changed for bob", ""},
		{"passwd:         files systemd\nshadow:         files", ""},
		{"Last password change\t\t\t\t\t: Jan 01, 2024\nPassword expires\t\t\t\t\t: never", ""},
		{"Jan 12 10:00:04 web systemd[1]: systemd-ask-password-console.service: Deactivated successfully.", ""},
		{"open /var/lib/nannyagent/token.json: permission denied", ""},
		{"max_tokens: 2048\ntoken_type: static\nrefresh_token_expires_in: 0", ""},
		{"net.ipv4.tcp_fastopen = 1\nkernel.keys.maxkeys = 200\nkernel.random.boot_id = 3c6a1e32-2f7b-4d5e-9b1a-0c2d3e4f5a6b", ""},
		{"UUID=\"4f1c2d3e-5a6b-7c8d-9e0f-1a2b3c4d5e6f\" TYPE=\"ext4\" PARTUUID=\"0b7c5e12-01\"", ""},
		{"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  /usr/bin/true", ""},
		{"SHA256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", ""},
		{"Secure Boot: disabled\nintegrity: Loaded X.509 cert 'Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1'", ""},
		{"the bearer of this message; basic information; bearer tokens", ""},
		{"ESTAB 0 0 10.0.0.5:22 203.0.113.7:50522 users:((\"sshd\",pid=812,fd=4))", ""},
		{"/dev/sda1 ext4 29G 8.1G 20G 30% / inode 0x7f3a2b1c", ""},
		{"PasswordAuthentication no\nPubkeyAuthentication yes", ""},
		{"KeyringMode=private\nProtectKernelKeys=yes", ""},
		{"disk-by-uuid-a1b2c3d4e5f6a7b8c9d0 task-0123456789abcdefghij", ""},
		{"Key type dns_resolver registered\nLoading compiled-in X.509 certificates", ""},
		{"https://deb.debian.org/debian bookworm/main amd64 Packages", ""},
		{"audit: type=1400 apparmor=\"DENIED\" operation=\"open\" profile=\"/usr/sbin/cupsd\" name=\"/etc/shadow\" pid=1 comm=\"cupsd\" requested_mask=\"r\"", ""},
		{"--- PASS: TestFoo (0.00s)\nPASS: 12 FAIL: 0", ""},
		{"dbus-daemon[1]: Activating service name='org.freedesktop.secrets' requested by ':1.9'", ""},
	} {
		want := tc.want
		if want == "" {
			want = tc.in
		}
		require.Equal(t, want, String(tc.in), "input %q", tc.in)
		// One pass finds everything in these: the extra passes of Redact
		// are a safety net, not how the recognisers work.
		once1, _ := once(tc.in)
		once2, n := once(once1)
		require.Equal(t, once1, once2, "second pass over %q", tc.in)
		require.Zero(t, n)
	}
}

func TestRedactCounts(t *testing.T) {
	r := Redact("password=a token=b\nAuthorization: Bearer " + jwt + "\nnothing here")
	require.Equal(t, 3, r.Redactions)
	require.Equal(t, "password=[REDACTED] token=[REDACTED]\nAuthorization: Bearer [REDACTED]\nnothing here", r.Text)
	require.Zero(t, Redact(r.Text).Redactions)
	require.Zero(t, Redact("").Redactions)
	require.Equal(t, "", String(""))
}

func TestNoTriggerReturnsInput(t *testing.T) {
	s := strings.Repeat("plain text 0123 /usr/lib\n", 100)
	out := String(s)
	require.Equal(t, s, out)
	// The same string, not a copy.
	require.Same(t, unsafe.StringData(s), unsafe.StringData(out))
}

// Tomcat as an origin of the differential harness: the servlet is mapped to /*, so the path it
// routes on is getPathInfo(), which the container has decoded, normalised and stripped of every
// segment's ;parameters. It answers with that path, the headers it received and the length and
// SHA-256 of the body it read.
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Collections;

public class ReportServlet extends HttpServlet {
    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        byte[] body = req.getInputStream().readAllBytes();
        String sha;
        try {
            StringBuilder hex = new StringBuilder();
            for (byte b : MessageDigest.getInstance("SHA-256").digest(body)) {
                hex.append(String.format("%02x", b));
            }
            sha = hex.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IOException(e);
        }
        String path = req.getServletPath() + (req.getPathInfo() == null ? "" : req.getPathInfo());
        StringBuilder out = new StringBuilder("{\"path\": ").append(quote(path)).append(", \"headers\": [");
        boolean first = true;
        for (String name : Collections.list(req.getHeaderNames())) {
            for (String value : Collections.list(req.getHeaders(name))) {
                out.append(first ? "" : ", ").append("[").append(quote(name)).append(", ")
                    .append(quote(value)).append("]");
                first = false;
            }
        }
        out.append("], \"body_len\": ").append(body.length).append(", \"body_sha256\": \"")
            .append(sha).append("\"}");
        byte[] data = out.toString().getBytes(StandardCharsets.UTF_8);
        resp.setStatus(200);
        resp.setContentType("application/json");
        resp.setContentLength(data.length);
        resp.getOutputStream().write(data);
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}

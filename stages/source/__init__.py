"""Where a base image comes from: fetched (catalogue, URL, local path; downloaded, verified,
unpacked, cached) or built from Debian packages."""
